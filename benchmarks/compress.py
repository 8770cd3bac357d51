"""Compressed updates with error feedback in the simulator: bytes and accuracy to a target.

For D-PSGD (one-peer exponential graph) and MoDeST, runs `--compress none` and each compressor
side by side, same seed and budget, and prints per run: rounds and MB to the target accuracy, the
ratio of bytes to the target against `none` (the goal of issue 12 item 3: >= 14x), the final
accuracy and its difference to `none` in points (goal: within 1), and the bytes of model tensors
alone. Last line: the issue's other reading of the goal, D-PSGD (none) bytes / MoDeST bytes.

    .venv/bin/python benchmarks/compress.py                 # 32 nodes; about 15 min on a loaded core
    .venv/bin/python benchmarks/compress.py --reduced       # CI size: 12 nodes, a few rounds
    .venv/bin/python benchmarks/compress.py --nodes 100 --dpsgd-rounds 200 --modest-rounds 250

Bytes are the simulator's byte accounting (every frame the real codec would produce: PING/PONG,
views, models; compressed deltas at their encoded size). One seed per run (the simulator is
deterministic for a seed); `--seeds 0,1,2` repeats over seeds and adds min / median / max.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from gossipnode.sim.config import SimConfig
from gossipnode.sim.run import run_sim

DEFAULT_COMPRESSORS = ("none", "f16", "int8", "topk:0.1", "topk:0.03")


def bytes_to(series: list[dict], target: float) -> tuple[int | None, int | None]:
    hit = next((r for r in series if r["acc_mean"] is not None and r["acc_mean"] >= target), None)
    return (hit["bytes_total"], hit["round"]) if hit else (None, None)


def final_acc(series: list[dict], last: int = 3) -> float:
    """Mean of the last `last` evaluations (one evaluation is noisy at this scale)."""
    accs = [r["acc_mean"] for r in series if r["acc_mean"] is not None][-last:]
    return statistics.fmean(accs)


def run(label: str, compress: str, args: argparse.Namespace, seed: int) -> dict:
    protocol, _, topology = label.partition("-")
    rounds = args.dpsgd_rounds if protocol == "dpsgd" else args.modest_rounds
    cfg = SimConfig(protocol=protocol, topology=topology or "exp", nodes=args.nodes, rounds=rounds, seed=seed,
                    mnist1d_samples=args.samples, sample_size=args.sample_size,
                    eval_every=args.eval_every, eval_nodes=min(8, args.nodes), eval_samples=args.eval_samples,
                    target=args.target, filter="none", correct="none", compress=compress)
    t0 = time.perf_counter()
    res = run_sim(cfg)
    s = res["summary"]
    b, r = bytes_to(res["series"], args.target)
    model_kinds = ("model", "model_trained", "model_aggregated")
    return {"protocol": label, "compress": compress, "seed": seed, "bytes_to_target": b, "round_to_target": r,
            "final_acc": final_acc(res["series"]), "bytes_total": s["bytes_total"],
            "model_msg_bytes": sum(s["message_bytes"].get(k, 0) for k in model_kinds),
            "trained_bytes": s["message_bytes"].get("model_trained", s["message_bytes"].get("model", 0)),
            "rounds": s["rounds_completed"], "wall_s": round(time.perf_counter() - t0, 1)}


def table(rows: list[dict], target: float) -> str:
    out = [f"| protocol | compress | rounds to {target} | MB to {target} | bytes ratio vs none | "
           "final acc | vs none (points) | MB sent (all) | model-message MB |",
           "|---|---|---|---|---|---|---|---|---|"]
    several = len({r["seed"] for r in rows}) > 1
    for r in rows:
        label = f"{r['protocol']} (seed {r['seed']})" if several else r["protocol"]
        base = next(x for x in rows if x["protocol"] == r["protocol"] and x["compress"] == "none"
                    and x["seed"] == r["seed"])
        mb = f"{r['bytes_to_target'] / 1e6:.2f}" if r["bytes_to_target"] else "not reached"
        ratio = (f"{base['bytes_to_target'] / r['bytes_to_target']:.2f}x"
                 if r["bytes_to_target"] and base["bytes_to_target"] else "-")
        out.append(f"| {label} | {r['compress']} | {r['round_to_target'] or '-'} | {mb} | {ratio} | "
                   f"{r['final_acc']:.3f} | {100 * (r['final_acc'] - base['final_acc']):+.1f} | "
                   f"{r['bytes_total'] / 1e6:.2f} | {r['model_msg_bytes'] / 1e6:.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=32)
    p.add_argument("--samples", type=int, default=0, help="MNIST-1D samples (0: 10,000)")
    p.add_argument("--target", type=float, default=0.6)
    p.add_argument("--dpsgd-rounds", type=int, default=80)
    p.add_argument("--modest-rounds", type=int, default=150)
    p.add_argument("--sample-size", type=int, default=10)
    p.add_argument("--eval-every", type=float, default=5.0)
    p.add_argument("--eval-samples", type=int, default=1000)
    p.add_argument("--protocols", default="dpsgd,modest",
                   help="dpsgd (one-peer exponential graph), dpsgd-ring, dpsgd-regular:K, modest")
    p.add_argument("--compress", default=",".join(DEFAULT_COMPRESSORS))
    p.add_argument("--seeds", default="0", help="comma-separated seeds (one table block per seed)")
    p.add_argument("--reduced", action="store_true", help="CI size: 12 nodes, few rounds, low target")
    p.add_argument("--json-out", default="")
    args = p.parse_args(argv)
    if args.reduced:
        args.nodes, args.samples, args.dpsgd_rounds, args.modest_rounds = 12, 3000, 12, 15
        args.sample_size, args.target, args.eval_samples, args.eval_every = 4, 0.25, 300, 2.0
    comps = [c.strip() for c in args.compress.split(",") if c.strip()]
    if "none" not in comps:
        comps.insert(0, "none")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for proto in args.protocols.split(","):
            for c in comps:
                rows.append(run(proto, c, args, seed))
                r = rows[-1]
                print(f"# {proto} {c} seed {seed}: {r['wall_s']} s wall, final {r['final_acc']:.3f}, "
                      f"to target {r['bytes_to_target']}", file=sys.stderr, flush=True)
    print(f"{args.nodes} nodes, MNIST-1D, cnn1d, target {args.target}, D-PSGD {args.dpsgd_rounds} rounds "
          f"(dpsgd: one-peer exponential graph; dpsgd-ring: ring), MoDeST {args.modest_rounds} rounds "
          f"(s={args.sample_size}); final acc = mean of the last 3 evaluations")
    print(table(rows, args.target))
    d0 = [r for r in rows if r["protocol"] == "dpsgd" and r["compress"] == "none" and r["bytes_to_target"]]
    for r in rows:
        if r["protocol"] == "modest" and r["bytes_to_target"] and d0:
            same = next((x for x in d0 if x["seed"] == r["seed"]), None)
            if same:
                print(f"D-PSGD (none) / MoDeST ({r['compress']}) bytes to {args.target}: "
                      f"{same['bytes_to_target'] / r['bytes_to_target']:.1f}x")
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        print(f"\nOver seeds {seeds}: min / median / max")
        print("| protocol | compress | bytes ratio vs none | final acc vs none (points) |\n|---|---|---|---|")
        for proto in dict.fromkeys(r["protocol"] for r in rows):
            for c in comps:
                ratios, diffs = [], []
                for s in seeds:
                    r = next(x for x in rows if (x["protocol"], x["compress"], x["seed"]) == (proto, c, s))
                    b = next(x for x in rows if (x["protocol"], x["compress"], x["seed"]) == (proto, "none", s))
                    if r["bytes_to_target"] and b["bytes_to_target"]:
                        ratios.append(b["bytes_to_target"] / r["bytes_to_target"])
                    diffs.append(100 * (r["final_acc"] - b["final_acc"]))
                rr = (f"{min(ratios):.2f}x / {statistics.median(ratios):.2f}x / {max(ratios):.2f}x"
                      f"{'' if len(ratios) == len(seeds) else f' ({len(seeds) - len(ratios)} not reached)'}"
                      if ratios else "not reached")
                print(f"| {proto} | {c} | {rr} | {min(diffs):+.1f} / {statistics.median(diffs):+.1f} / "
                      f"{max(diffs):+.1f} |")
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
