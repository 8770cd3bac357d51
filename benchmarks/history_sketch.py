"""Are compact sketches of SybilWall histories enough? (issue 10, item 6: the planned fix for a
lone Sybil per MoDeST round is histories that follow identities along the round chain, which is
affordable only if each travels as a few hundred bytes.) Runs the simulator's upper bound
(`--history-scope global`) with FoolsGold computed on d-dimensional Gaussian random projections
of the histories, rounded to float16, instead of on the histories themselves, and prints the
honest accuracy and the attack rate for each d (0: the full histories), in one run.

    PYTHONPATH=$PWD python benchmarks/history_sketch.py [--dims 0,128] [--attack backdoor] [--phi 0.1] [--seed 0]

The projection replaces `filters.foolsgold_weights` for the run (an experiment harness, not a
setting of the daemon or the simulator).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from gossipnode.learn.aggregation import filters
from gossipnode.sim import SimConfig, run_sim

FULL = filters.foolsgold_weights


def sketched(d: int):
    proj: dict[int, np.ndarray] = {}

    def weights(h: np.ndarray) -> np.ndarray:
        n = h.shape[1]
        if n == d:                      # already projected (the inner call on the finite rows)
            return FULL(h)
        if n not in proj:
            proj[n] = (np.random.default_rng(123).standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)
        return FULL((h.astype(np.float32) @ proj[n]).astype(np.float16).astype(np.float32))
    return weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", default="0,128")
    ap.add_argument("--attack", default="backdoor")
    ap.add_argument("--phi", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=300)
    a = ap.parse_args()
    for d in [int(x) for x in a.dims.split(",")]:
        filters.foolsgold_weights = sketched(d) if d else FULL
        cfg = SimConfig(protocol="modest", nodes=100, rounds=a.rounds, seed=a.seed, partition="dirichlet:0.1",
                        local_epochs=3, eval_every=max(1, a.rounds // 6), attack=a.attack, sybils=a.phi,
                        filter="sybilwall", combine="mean", history_scope="global")
        t0 = time.perf_counter()
        s = run_sim(cfg)["summary"]
        print(json.dumps({"dims": d or "full", "attack": a.attack, "phi": a.phi, "seed": a.seed,
                          "acc": s["final_acc_mean"], "rate": s["final_attack_rate"],
                          "wall": round(time.perf_counter() - t0, 1)}), flush=True)
    filters.foolsgold_weights = FULL


if __name__ == "__main__":
    main()
