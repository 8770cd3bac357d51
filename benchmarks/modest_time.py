"""MoDeST's time per round against FL (issue 12 item 7, issue 10 item 7): the compare
experiment's set-up (docs/RESULTS.md section 1: 100 nodes, MNIST-1D iid, 0.4 s per local
epoch, latency U(10, 100) ms, 12.5 MB/s, sample size 10, target 0.6), run side by side in one
process: MoDeST with the core's pre-walks (the default, SPEC 15.6), MoDeST without them, and FL.
Prints virtual seconds and rounds to the target, seconds per round, the ratios to FL, and where
a round's time goes; per seed and as min / median / max over the seeds. Virtual time: the
figures do not depend on this machine's load.

    python benchmarks/modest_time.py [--seeds 3] [--nodes 100] [--compute 1.0]
        [--model cnn1d|gnlenet] [--speed measured|SAMPLES_PER_S] [--target 0.6]

Regimes (issue 10 item 7): `--compute F` scales the training time (F x 0.4 s per epoch).
`--model gnlenet` is the papers' GN-LeNet (~78k parameters, 312 KB, against cnn1d's 5k and
21 KB) on MNIST-1D zero-padded to 1 x 8 x 8. `--speed measured` times real training of the
model on this machine (one torch thread, batch 20) and uses that speed for every node: what a
node on this CPU would take, not an assumed figure; `--speed measured-cifar` times it on
CIFAR-10-sized inputs (3 x 32 x 32), the papers' regime, while the runs still learn MNIST-1D.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from gossipnode.learn import data as ldata
from gossipnode.learn.models import build_model
from gossipnode.sim import SimConfig, run_sim

VARIANTS = (("modest (pre-walks)", "modest", True), ("modest (no pre-walks)", "modest", False), ("fl", "fl", True))
CIFAR_PER_NODE = 500  # CIFAR-10's 50,000 training images over the papers' 100 nodes
BANDWIDTH = 12.5e6   # the compare experiment's bytes/s per node (SimConfig default)


def padded_8x8(d: ldata.Dataset) -> ldata.Dataset:
    """MNIST-1D's 40 features zero-padded to 64 and seen as a 1 x 8 x 8 image (for gnlenet)."""
    def img(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), 64), dtype=np.float32)
        out[:, : x.shape[1]] = x
        return out.reshape(len(x), 1, 8, 8)
    return ldata.Dataset(img(d.x), d.y, img(d.x_test), d.y_test, d.num_classes, (1, 8, 8))


def measured_speed(model: str, data: ldata.Dataset, batch: int = 20, samples: int = 2000,
                   cifar: bool = False) -> float:
    """Samples per second of real SGD training of `model` on this machine, one torch thread; with
    `cifar`, of the model on CIFAR-10-sized inputs (3 x 32 x 32, random values: only time counts)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shape = (3, 32, 32) if cifar else data.input_shape
        m = build_model(model, shape, data.num_classes, seed=0)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        if cifar:
            samples = 400
            x = torch.randn(samples, *shape)
            y = torch.randint(0, data.num_classes, (samples,))
        else:
            x = torch.as_tensor(data.x[:samples])
            y = torch.as_tensor(data.y[:samples])
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for i in range(0, len(y), batch):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(x[i:i + batch]), y[i:i + batch]).backward()
                opt.step()
            best = min(best, time.perf_counter() - t0)
        return len(y) / best
    finally:
        torch.set_num_threads(threads)


def one(protocol: str, prewalk: bool, seed: int, a: argparse.Namespace, speed: float,
        data: ldata.Dataset) -> dict:
    cfg = SimConfig(protocol=protocol, nodes=a.nodes, seed=seed, rounds=None, duration=a.duration,
                    eval_every=5.0 * a.compute_scale, eval_nodes=10, eval_samples=1000, target=a.target,
                    stop_at_target=1, filter="none", correct="none", prewalk=prewalk,
                    compute=f"const:{speed:g}", model=a.model)
    t0 = time.perf_counter()
    s = run_sim(cfg, data=data)["summary"]
    t, k = s["time_to_target_s"], s["round_to_target"]
    msgs = s["messages"]   # counts per message type
    return {"t": t, "rounds": k, "per_round": (t / k) if t and k else None, "wall": time.perf_counter() - t0,
            "model_bytes": s["model_bytes"], "msg_bytes": s["message_bytes"], "msgs": msgs}


def breakdown(name: str, r: dict, train_s: float, sample: int) -> str:
    """Where one round's virtual time goes, from the round's length and the protocol's critical
    path: every trainer trains (train_s); the model goes out to the s trainers over the
    aggregator's (server's) uplink one after another and s updates come back over its downlink,
    so 2 s model messages pass one node's link per round; the rest is latency, pings and waits."""
    if not r["per_round"]:
        return f"| {name} | not reached | | | |"
    per_msg = r["msg_bytes"].get("model_aggregated", r["msg_bytes"].get("model", 0))
    n_msg = r["msgs"].get("model_aggregated", r["msgs"].get("model", 0))
    avg = per_msg / n_msg if n_msg else r["model_bytes"]
    link = 2 * sample * avg / BANDWIDTH
    rest = r["per_round"] - train_s - link
    return (f"| {name} | {r['per_round']:.3f} | {train_s:.3f} ({100 * train_s / r['per_round']:.0f} %) | "
            f"{link:.3f} ({100 * link / r['per_round']:.0f} %; {avg / 1e3:.0f} KB per model message) | "
            f"{rest:.3f} ({100 * rest / r['per_round']:.0f} %) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--compute", type=float, default=1.0, help="training time x this (with the default speed)")
    ap.add_argument("--model", default="cnn1d", help="cnn1d (default) or gnlenet (MNIST-1D as 1 x 8 x 8)")
    ap.add_argument("--speed", default=None, help="samples/s per node, or 'measured' (default 200 / compute)")
    ap.add_argument("--target", type=float, default=0.6)
    ap.add_argument("--duration", type=float, default=900.0, help="virtual seconds at most per run")
    a = ap.parse_args()
    data = ldata.load_mnist1d()   # the simulator's default data set (10,000 samples)
    if a.model == "gnlenet":
        data = padded_8x8(data)
    if a.speed in ("measured", "measured-cifar"):
        speed = measured_speed(a.model, data, cifar=a.speed == "measured-cifar")
        print(f"{a.speed}: {a.model} trains {speed:.0f} samples/s on this machine (1 thread, batch 20)")
        if a.speed == "measured-cifar":   # a local epoch as long as one over 500 CIFAR-10 images
            speed *= (len(data.y) / a.nodes) / CIFAR_PER_NODE
            print(f"  as {speed:.0f} samples/s of MNIST-1D: a local epoch takes as long as one over "
                  f"{CIFAR_PER_NODE} CIFAR-10 images (50,000 over 100 nodes)")
    else:
        speed = float(a.speed) if a.speed else 200.0 / a.compute
    a.compute_scale = max(1.0, 200.0 / speed)   # evaluate less often when rounds are long
    a.duration *= a.compute_scale
    epoch = len(data.y) / a.nodes
    train_s = epoch / speed
    rows: dict[str, list[dict]] = {name: [] for name, _, _ in VARIANTS}
    for seed in range(a.seeds):
        for name, proto, pw in VARIANTS:
            r = one(proto, pw, seed, a, speed, data)
            rows[name].append(r)
            print(f"seed {seed} {name}: {r['t']} s, {r['rounds']} rounds, "
                  f"{r['per_round'] and round(r['per_round'], 3)} s/round (wall {r['wall']:.0f} s)", flush=True)
    print(f"\n{a.nodes} nodes, model {a.model} ({rows['fl'][0]['model_bytes'] / 1e3:.0f} KB), {speed:.0f} samples/s "
          f"per node ({train_s:.2f} s per local epoch), target {a.target}, {a.seeds} seeds (min / median / max)")
    print("| protocol | virtual s to target | rounds | s per round | time vs FL |")
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
    print("\nwhere a round's time goes (seed 0, an estimate): s per round = training + 2 x sample model "
          "messages through one node's link, one after another + the rest (latency, pings, waiting; "
          "negative where the transfers overlap)")
    print("| protocol | s per round | training | model transfer on the critical path | rest |")
    print("|---|---|---|---|---|")
    for name, _, _ in VARIANTS:
        print(breakdown(name, rows[name][0], train_s, 10))


if __name__ == "__main__":
    main()
