"""Simulator scale: wall time and peak memory of a MoDeST run at N nodes, with the view's
incremental active sets (core/activeset.py) and, side by side in one run, with A(k) and its
sample order recomputed from the whole view on every call (what the sets replace). Each run is a
fresh process, so each gets its own peak RSS; runs are interleaved, the best of `--reps` kept.

    python benchmarks/sim_scale.py --nodes 1000 --rounds 20
    python benchmarks/sim_scale.py --nodes 5000 --rounds 100 --only incremental --reps 1
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("incremental", "recomputed")


def _recomputed() -> None:
    from gossipnode.core.messages import Status
    from gossipnode.core.sampling import sample_order
    from gossipnode.core.view import View

    def active(self, k, tau, me):
        out = [pk for pk, e in self.entries.items()
               if e.status != Status.LEAVE and e.last_active >= k - tau and pk != me]
        return out + [me]

    def ahead(self, k, tau, me, pk):
        full = sample_order(active(self, k, tau, me) + [pk], k)
        return full[: full.index(pk)]

    View.active = active
    View.order = lambda self, k, tau, me: sample_order(active(self, k, tau, me), k)
    View.ahead = ahead


def child(variant: str, nodes: int, rounds: int) -> None:
    from gossipnode.learn import data as ldata
    from gossipnode.sim import SimConfig, run_sim

    if variant == "recomputed":
        _recomputed()
    n = max(10_000, 2 * nodes)   # the CLI's default, or enough for a shard per node
    data = ldata.load_mnist1d(num_samples=n)
    cfg = SimConfig(nodes=nodes, rounds=rounds, sample_size=10, mnist1d_samples=n, eval_samples=300,
                    eval_every=20, model="logreg", filter="none", correct="none")
    t0 = time.perf_counter()
    r = run_sim(cfg, data=data)
    wall = time.perf_counter() - t0
    s = r["summary"]
    act = [p["view_active"] for p in r["series"] if p.get("view_active") is not None]
    print(json.dumps({"wall": wall, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rounds": s["rounds_completed"], "acc": s["final_acc_mean"],
                      "messages": sum(s["messages"].values()), "view_active": act[-1] if act else None}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--only", choices=VARIANTS)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.nodes, a.rounds)
    variants = (a.only,) if a.only else VARIANTS
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(a.reps):
        for v in variants:
            out = subprocess.run([sys.executable, __file__, "--child", v, "--nodes", str(a.nodes),
                                  "--rounds", str(a.rounds)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{v} run failed:\n{out.stderr[-2000:]}")
            runs[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"MoDeST simulator, {a.nodes} nodes, {a.rounds} rounds, sample size 10, logreg, "
          f"no filter or correction; best of {a.reps}")
    print("| A(k) and order | wall s (min / max) | peak RSS MB | rounds | final acc | messages | A(k) at end |")
    print("|---|---|---|---|---|---|---|")
    best = {}
    for v in variants:
        rs = runs[v]
        b = best[v] = min(rs, key=lambda r: r["wall"])
        print(f"| {v} | {b['wall']:.1f} / {max(r['wall'] for r in rs):.1f} | {b['rss_mb']:.0f} | {b['rounds']} | "
              f"{b['acc']:.3f} | {b['messages']} | {b['view_active']} |")
    if len(best) == 2:
        inc, rec = best["incremental"], best["recomputed"]
        same = rec["acc"] == inc["acc"] and rec["messages"] == inc["messages"]
        print(f"ratio recomputed / incremental wall: {rec['wall'] / inc['wall']:.2f}x; same outcome: {same}")


if __name__ == "__main__":
    main()
