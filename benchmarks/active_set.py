"""Active sets and liveness cost at scale (issue 12 item 4): a MoDeST simulation of N nodes with
the keep-alive pings (SPEC 15.7, the default) and without them (every node probes every inactive
member, SPEC 15.5 only), side by side in one run. Prints, for each: wall and virtual time, the
smallest and the last A(k) an aggregator saw against the alive nodes, pings sent, and the
share of all bytes that were pings and views (model messages less their model).

    python benchmarks/active_set.py [--nodes 1000] [--rounds 150] [--reps 1] [--model cnn1d]
"""
from __future__ import annotations

import argparse
import statistics
import time

from gossipnode.sim import SimConfig, run_sim


def one(a: argparse.Namespace, keepalive: bool, seed: int) -> dict:
    cfg = SimConfig(protocol="modest", nodes=a.nodes, rounds=a.rounds, seed=seed, model=a.model,
                    filter="none", correct="none", eval_samples=300, eval_every=a.eval_every,
                    inactivity_threshold=a.tau, keepalive=keepalive)
    t0 = time.perf_counter()
    r = run_sim(cfg)
    wall = time.perf_counter() - t0
    s = r["summary"]
    mb, mc = s["message_bytes"], s["messages"]
    total = sum(mb.values())
    models = sum(mc.get(k, 0) for k in ("model_trained", "model_aggregated"))
    model_msg_bytes = sum(mb.get(k, 0) for k in ("model_trained", "model_aggregated"))
    view = model_msg_bytes - models * s["model_bytes"]
    act = [p["view_active"] for p in r["series"] if p.get("view_active") is not None]
    return {"keepalive": keepalive, "seed": seed, "wall": wall, "virtual": s["virtual_time_s"],
            "rounds": s["rounds_completed"], "acc": s["final_acc_mean"], "pings": mc.get("ping", 0),
            "ping_share": (mb.get("ping", 0) + mb.get("pong", 0)) / total, "view_share": view / total,
            "active_min": min(act) if act else None, "active_last": act[-1] if act else None,
            "events": s["protocol_events"]}


def mmm(xs: list[float], f: str = "{:.1f}") -> str:
    return " / ".join(f.format(x) for x in (min(xs), statistics.median(xs), max(xs)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=150)
    ap.add_argument("--reps", type=int, default=1, help="seeds 0..reps-1, each with keep-alive on and off")
    ap.add_argument("--model", default="cnn1d")
    ap.add_argument("--tau", type=int, default=50)
    ap.add_argument("--eval-every", type=float, default=10.0, help="virtual seconds between evaluations")
    a = ap.parse_args()
    rows = []
    for seed in range(a.reps):
        for ka in (True, False):
            rows.append(one(a, ka, seed))
            print(rows[-1], flush=True)
    print(f"\nMoDeST, {a.nodes} nodes (all alive), {a.rounds} rounds, tau {a.tau}, {a.model}, s = 10; "
          f"min / median / max over {a.reps} seed(s)")
    print("| liveness | wall s | virtual s | A(k) smallest / last | pings | pings+pongs share | view share "
          "| final acc | protocol events |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ka in (True, False):
        g = [r for r in rows if r["keepalive"] == ka]
        print(f"| {'keep-alive (default)' if ka else 'probes only'} | {mmm([r['wall'] for r in g])} | "
              f"{mmm([r['virtual'] for r in g])} | "
              f"{'; '.join(str(r['active_min']) + ' / ' + str(r['active_last']) for r in g)} | "
              f"{mmm([r['pings'] for r in g], '{:.0f}')} | {mmm([r['ping_share'] for r in g], '{:.3f}')} | "
              f"{mmm([r['view_share'] for r in g], '{:.3f}')} | {mmm([r['acc'] for r in g], '{:.3f}')} | "
              f"{'; '.join(str(r['events']) for r in g)} |")
    on = [r for r in rows if r["keepalive"]]
    off = [r for r in rows if not r["keepalive"]]
    print(f"ratios off / on, per seed: wall {[round(b['wall'] / x['wall'], 2) for x, b in zip(on, off)]}, "
          f"pings {[round(b['pings'] / max(1, x['pings']), 2) for x, b in zip(on, off)]}, "
          f"virtual {[round(float(b['virtual'] / x['virtual']), 2) for x, b in zip(on, off)]}")


if __name__ == "__main__":
    main()
