"""The adoption check and the aggregator self-check (SPEC section 15), measured in the simulator.

For each scenario it runs the same seeded MoDeST simulation twice, side by side: with the
default `--adopt-margin` and with the checks off (`--adopt-margin 0`), and prints final and
best accuracy, the attack rate (only where there is an attack), honest round models refused
(`worse_model`), aggregator fallbacks and the largest honest loss rise the check let through.

Scenarios: no attack (iid and dirichlet:0.1: what the check costs honest networks), and one
label-flip Sybil per 10 honest nodes that, when sampled to aggregate, aggregates honestly,
replaces the model (`--sybil-aggregate replace`) or ignores the updates (`drop`); and the
replacing Sybil on dirichlet:0.1 data, where the margin is widened by the labels' skew.

    python benchmarks/adoption_check.py            # 10 nodes, 100 rounds, seeds 1
    python benchmarks/adoption_check.py --quick    # 6 nodes, 30 rounds
    python benchmarks/adoption_check.py --margin 2 # another margin for the "on" runs
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

SCENARIOS = [
    ("iid, no attack", {}),
    ("dirichlet:0.1, no attack", {"partition": "dirichlet:0.1"}),
    ("1 label-flip Sybil / 10, aggregates honestly", {"attack": "label-flip", "sybils": 0.1}),
    ("same, replaces the model when it aggregates", {"attack": "label-flip", "sybils": 0.1,
                                                     "sybil_aggregate": "replace"}),
    ("same, drops the updates when it aggregates", {"attack": "label-flip", "sybils": 0.1,
                                                    "sybil_aggregate": "drop"}),
    ("dirichlet:0.1, the Sybil replaces the model", {"partition": "dirichlet:0.1", "attack": "label-flip",
                                                     "sybils": 0.1, "sybil_aggregate": "replace"}),
]


def one(args: tuple[dict, int, int, int, float | None]) -> dict:
    from gossipnode.sim import SimConfig, run_sim
    params, nodes, rounds, seed, margin = args
    extra = {} if margin is None else {"adopt_margin": margin}   # None: the default
    cfg = SimConfig(protocol="modest", nodes=nodes, rounds=rounds, seed=seed, **extra, **params)
    t0 = time.perf_counter()
    s = run_sim(cfg)["summary"]
    return {"final": s["final_acc_mean"], "best": s["best_acc_mean"], "attack": s.get("final_attack_rate"),
            "refused": s["models_rejected"].get("worse_model", 0),
            "fallbacks": s.get("aggregation_fallbacks", {}),
            "rise_max": (s.get("adopt_rise") or {}).get("max"), "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--margin", type=float, default=None, help="the margin of the 'on' runs (default: the default)")
    a = ap.parse_args()
    from gossipnode.sim import SimConfig
    nodes, rounds = (6, 30) if a.quick else (10, 100)
    jobs = [(p, nodes, rounds, a.seed, m) for _, p in SCENARIOS for m in (a.margin, 0.0)]
    with ProcessPoolExecutor(a.workers) as ex:
        res = list(ex.map(one, jobs))
    print(f"MoDeST simulator, {nodes} honest nodes, {rounds} rounds, seed {a.seed}; "
          f"checks on (--adopt-margin {SimConfig().adopt_margin if a.margin is None else a.margin:g}) vs off (0)")
    print("| scenario | final on / off | best on / off | attack rate on / off | refused | fallbacks | "
          "max honest rise |")
    print("|---|---|---|---|---|---|---|")
    for k, (name, _) in enumerate(SCENARIOS):
        on, off = res[2 * k], res[2 * k + 1]
        att = (f"{on['attack']:.3f} / {off['attack']:.3f}" if on["attack"] is not None else "-")
        fb = ", ".join(f"{x} {n}" for x, n in sorted(on["fallbacks"].items())) or "0"
        rise = f"{on['rise_max']:.3f}" if on["rise_max"] is not None else "-"
        print(f"| {name} | {on['final']:.3f} / {off['final']:.3f} | {on['best']:.3f} / {off['best']:.3f} | "
              f"{att} | {on['refused']} | {fb} | {rise} |")


if __name__ == "__main__":
    main()
