"""How alike are a MoDeST run's updates across rounds: Sybils (one attacker, many identities)
against honest nodes (issue 10, RESULTS 13.4). Logs every update an aggregator combines (the
normalised `model - base`) and prints, per band of round gaps, the cosine between two Sybil
identities, within one Sybil identity, between two honest nodes and within one honest node.

    PYTHONPATH=$PWD python benchmarks/update_similarity.py [--attack backdoor] [--phi 0.1] [--rounds 150] [--seed 0]

The logging wraps `Pipeline.aggregate` for the run (an experiment harness).
"""
from __future__ import annotations

import argparse

import numpy as np

from gossipnode.learn.aggregation import pipeline as pl
from gossipnode.learn.state import flatten
from gossipnode.sim import SimConfig, run_sim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attack", default="backdoor")
    ap.add_argument("--phi", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    log: list[tuple[int, str, np.ndarray]] = []
    orig = pl.Pipeline.aggregate

    def aggregate(self, contributions, base, own=None, beta=0.5):
        if own is None:   # a MoDeST aggregation of one round's updates
            for c in contributions:
                v = flatten(c.delta).astype(np.float64)
                log.append((c.round or 0, c.peer, v / (np.linalg.norm(v) + 1e-12)))
        return orig(self, contributions, base, own, beta)
    pl.Pipeline.aggregate = aggregate
    try:
        cfg = SimConfig(protocol="modest", nodes=100, rounds=a.rounds, seed=a.seed, partition="dirichlet:0.1",
                        local_epochs=3, eval_every=max(1, a.rounds // 3), attack=a.attack, sybils=a.phi)
        s = run_sim(cfg)["summary"]
    finally:
        pl.Pipeline.aggregate = orig
    rounds = np.array([k for k, _, _ in log])
    peers = [p for _, p, _ in log]
    syb = np.array([int(p[1:]) >= cfg.nodes for p in peers])   # Sybil names follow the honest ones (n100, ...)
    g = np.stack([v for _, _, v in log])
    g = g @ g.T
    same = np.array(peers)[:, None] == np.array(peers)[None, :]
    gap = np.abs(rounds[:, None] - rounds[None, :])
    print(f"{len(log)} updates ({int(syb.sum())} from Sybils); attack rate {s['final_attack_rate']:.3f}")
    print("| round gap | Sybil-Sybil, two identities | one Sybil identity | honest-honest, two nodes "
          "| one honest node |")
    print("|---|---|---|---|---|")
    for lo, hi in [(1, 1), (2, 5), (6, 20), (21, 10_000)]:
        band = (gap >= lo) & (gap <= hi)
        cells = []
        for m in (band & syb[:, None] & syb[None, :] & ~same, band & syb[:, None] & syb[None, :] & same,
                  band & ~syb[:, None] & ~syb[None, :] & ~same, band & ~syb[:, None] & ~syb[None, :] & same):
            x = g[m]
            cells.append(f"median {np.median(x):.2f}, max {x.max():.2f}" if x.size else "-")
        print(f"| {lo}-{hi if hi < 10_000 else 'end'} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
