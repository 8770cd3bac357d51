"""Simulator scale: wall time and peak memory of a MoDeST run at N nodes, with the memoised sample
order (core/sampling.py) and, side by side in one run, with the plain per-call sort.

    python benchmarks/sim_scale.py --nodes 1000 --rounds 20
"""
from __future__ import annotations

import argparse
import hashlib
import resource
import time

from gossipnode.core import roles, sampling
from gossipnode.learn import data as ldata
from gossipnode.sim import SimConfig, run_sim


def plain_order(candidates, round_):
    r = round_.to_bytes(8, "big")
    return sorted(set(candidates), key=lambda pk: hashlib.sha256(pk + r).digest())


def run(nodes: int, rounds: int, data: ldata.Dataset, memo: bool) -> tuple[float, dict]:
    roles.sample_order = sampling.sample_order if memo else plain_order
    cfg = SimConfig(nodes=nodes, rounds=rounds, sample_size=10, mnist1d_samples=len(data.y) + len(data.y_test),
                    eval_samples=500, model="logreg")
    t0 = time.perf_counter()
    r = run_sim(cfg, data=data)
    return time.perf_counter() - t0, r["summary"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    data = ldata.load_mnist1d(num_samples=max(4000, 4 * a.nodes))
    run(min(a.nodes, 50), 2, data, True)   # warm-up: torch's first training, data on the device
    rows = []
    for memo in (True, False, True, False):   # interleaved, the best of two each
        wall, s = run(a.nodes, a.rounds, data, memo)
        rows.append((memo, wall, s))
    rows = [min((r for r in rows if r[0] == m), key=lambda r: r[1]) for m in (True, False)]
    print(f"MoDeST simulator, {a.nodes} nodes, {a.rounds} rounds, sample size 10, logreg")
    print("| sample order | wall s | rounds | final acc | messages |")
    print("|---|---|---|---|---|")
    for memo, wall, s in rows:
        print(f"| {'memoised' if memo else 'plain sort'} | {wall:.1f} | {s['rounds_completed']} | "
              f"{s['final_acc_mean']:.3f} | {sum(s['messages'].values())} |")
    print(f"ratio plain / memoised: {rows[1][1] / rows[0][1]:.2f}x; "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
