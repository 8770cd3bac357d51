"""MoDeST's time per round against FL (issue 12 item 7): the compare experiment's set-up
(docs/RESULTS.md section 1: 100 nodes, MNIST-1D iid, cnn1d, 0.4 s per local epoch, latency
U(10, 100) ms, 12.5 MB/s, sample size 10, target 0.6), run side by side in one process: MoDeST
with the core's pre-walks (the default, SPEC 15.6), MoDeST without them, and FL. Prints virtual
seconds and rounds to the target, seconds per round, and the ratios to FL; per seed and as
min / median / max over the seeds. Virtual time: the figures do not depend on this machine's load.

    python benchmarks/modest_time.py [--seeds 3] [--nodes 100] [--compute 1.0]

`--compute F` scales the training time (F x 0.4 s per epoch) for the regime question of
issue 10 item 7 (with slow training the ping-walks matter less).
"""
from __future__ import annotations

import argparse
import statistics
import time

from gossipnode.learn import data as ldata
from gossipnode.sim import SimConfig, run_sim

VARIANTS = (("modest (pre-walks)", "modest", True), ("modest (no pre-walks)", "modest", False), ("fl", "fl", True))


def one(protocol: str, prewalk: bool, seed: int, nodes: int, compute: float, data: ldata.Dataset) -> dict:
    cfg = SimConfig(protocol=protocol, nodes=nodes, seed=seed, rounds=None, duration=900.0, eval_every=5.0, eval_nodes=10,
                    eval_samples=1000, target=0.6, stop_at_target=1, filter="none", correct="none",
                    prewalk=prewalk, compute=f"const:{200.0 / compute:g}")
    t0 = time.perf_counter()
    s = run_sim(cfg, data=data)["summary"]
    t, k = s["time_to_target_s"], s["round_to_target"]
    return {"t": t, "rounds": k, "per_round": (t / k) if t and k else None, "wall": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--compute", type=float, default=1.0, help="training time x this")
    a = ap.parse_args()
    data = ldata.load_mnist1d()   # the simulator's default data set (10,000 samples)
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in VARIANTS}
    for seed in range(a.seeds):
        for name, proto, pw in VARIANTS:
            r = one(proto, pw, seed, a.nodes, a.compute, data)
            rows[name].append(r)
            print(f"seed {seed} {name}: {r['t']} s, {r['rounds']} rounds, "
                  f"{r['per_round'] and round(r['per_round'], 3)} s/round (wall {r['wall']:.0f} s)", flush=True)
    print(f"\n{a.nodes} nodes, compute x{a.compute}, target 0.6, {a.seeds} seeds (min / median / max)")
    print("| protocol | virtual s to 0.6 | rounds | s per round | time vs FL |")
    print("|---|---|---|---|---|")
    fl = rows["fl"]
    for name, _, _ in VARIANTS:
        rs = rows[name]
        ratios = [r["t"] / f["t"] for r, f in zip(rs, fl) if r["t"] and f["t"]]

        def mmm(xs: list) -> str:
            xs = [x for x in xs if x is not None]
            if not xs:
                return "not reached"
            return f"{min(xs):.3g} / {statistics.median(xs):.3g} / {max(xs):.3g}"
        print(f"| {name} | {mmm([r['t'] for r in rs])} | {mmm([r['rounds'] for r in rs])} | "
              f"{mmm([r['per_round'] for r in rs])} | {mmm(ratios)}x |")


if __name__ == "__main__":
    main()
