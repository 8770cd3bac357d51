"""SybilWall where users run it, inside MoDeST (issue 10 item 6): 100 honest nodes,
Dirichlet(0.1), 3 local epochs, label flip and backdoor Sybils at ratio phi, each defence
(none / median / Krum / FoolsGold / SybilWall -> mean -> vc) next to its own no-attack
baseline, in the simulator. Prints one row per (attack, phi, defence): final honest accuracy,
the no-attack baseline's, and the attack rate next to the baseline's rate of the same attack.

    python benchmarks/sybil_modest.py [--phis 1.0] [--seeds 0] [--rounds 300] [--nodes 100]

One run is ~2 minutes of one core at 100 nodes and 300 rounds (measured: 400 clean rounds
116 s). The issue's full grid (phi in 0.1 / 0.5 / 1 / 2, 3 seeds) is --phis 0.1,0.5,1,2
--seeds 0,1,2: about 6 CPU-hours.
"""
from __future__ import annotations

import argparse
import json
import time

from gossipnode.sim import SimConfig, run_sim

DEFENCES = {"none": dict(filter="none", combine="mean"), "median": dict(filter="none", combine="median"),
            "krum": dict(filter="krum", combine="mean"), "foolsgold": dict(filter="foolsgold", combine="mean"),
            "sybilwall": dict(filter="sybilwall", combine="mean")}
ATTACKS = ("label-flip", "backdoor")


def one(a: argparse.Namespace, seed: int, defence: str, attack: str, phi: float) -> dict:
    cfg = SimConfig(protocol="modest", nodes=a.nodes, rounds=a.rounds, seed=seed, partition="dirichlet:0.1",
                    local_epochs=3, eval_every=max(1, a.rounds // 6), attack=attack if phi else "none",
                    sybils=phi, eval_attack="" if phi else ",".join(ATTACKS), round_twins=a.round_twins,
                    **DEFENCES[defence])
    t0 = time.perf_counter()
    res = run_sim(cfg)
    s = res["summary"]
    last = next((p for p in reversed(res["series"]) if p.get("attack_rates")), {})
    return {"seed": seed, "defence": defence, "attack": attack if phi else "none", "phi": phi,
            "acc": s["final_acc_mean"], "best": s["best_acc_mean"], "rates": last.get("attack_rates") or {cfg.attack: s["final_attack_rate"]},
            "rejected": s.get("models_rejected"), "round_twins": a.round_twins,
            "wall": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phis", default="1.0")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--defences", default=",".join(DEFENCES))
    ap.add_argument("--jsonl", default="", help="append each run as a JSON line here")
    ap.add_argument("--round-twins", default="on", choices=("on", "off"),
                    help="sybilwall: near-copies of a round get weight 0 (default on; off: the paper's weights)")
    a = ap.parse_args()
    phis = [float(x) for x in a.phis.split(",")]
    rows = []
    for seed in [int(x) for x in a.seeds.split(",")]:
        for d in a.defences.split(","):
            for attack, phi in [("none", 0.0)] + [(at, p) for p in phis for at in ATTACKS]:
                r = one(a, seed, d, attack, phi)
                rows.append(r)
                print(json.dumps(r), flush=True)
                if a.jsonl:
                    with open(a.jsonl, "a") as f:
                        f.write(json.dumps(r) + "\n")
    base = {(r["seed"], r["defence"]): r for r in rows if r["phi"] == 0}
    print(f"\n{a.nodes} honest nodes, MoDeST, Dirichlet(0.1), 3 local epochs, {a.rounds} rounds")
    print("| attack | phi | defence | seed | final acc | no-attack acc | attack rate | no-attack rate | wall s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["phi"] == 0:
            continue
        b = base[(r["seed"], r["defence"])]
        brate, rate = b["rates"].get(r["attack"]), r["rates"].get(r["attack"])
        def f3(x: float | None) -> str:
            return "-" if x is None else f"{x:.3f}"
        print(f"| {r['attack']} | {r['phi']} | {r['defence']} | {r['seed']} | {r['acc']:.3f} | {b['acc']:.3f} | "
              f"{f3(rate)} | {f3(brate)} | {r['wall']} |")


if __name__ == "__main__":
    main()
