"""Codec throughput on a ~100 MB float32 MODEL message, against a plain memory copy.

Prints MB/s (1 MB = 1e6 bytes) for encode, decode, and for the reference operations measured
in the same run: a memory copy of the same bytes and sha256 over them (the signature covers
sha256(body), so hashing is the floor for both directions). Best of N runs each.

    .venv/bin/python benchmarks/codec_throughput.py [--mb 100] [--repeat 3]
"""
from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable

import numpy as np

from gossipnode.core.messages import ModelKind, ModelMsg, Status, ViewRecord
from gossipnode.wire import Identity, ReplayGuard, decode, encode, model_hash, to_raw


def best_of(n: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def build_model(total_mb: float, rng: np.random.Generator) -> ModelMsg:
    # a few large layers plus small biases, like a real network
    n_big = 4
    per = int(total_mb * 1e6 / 4 / n_big)
    cols = 1024
    tensors = []
    for i in range(n_big):
        tensors.append(to_raw(f"layer{i}.weight", rng.standard_normal((per // cols, cols), dtype=np.float32)))
        tensors.append(to_raw(f"layer{i}.bias", rng.standard_normal(cols, dtype=np.float32)))
    view = tuple(ViewRecord(rng.bytes(32), 7, i, Status.JOIN, (), rng.bytes(64)) for i in range(100))
    return ModelMsg(7, ModelKind.TRAINED, model_hash(tensors), view, None, tuple(tensors), ())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    ident = Identity.from_seed(b"\x01" * 32)
    msg = build_model(args.mb, np.random.default_rng(0))
    frame = encode(ident, "bench", 1, 0.0, msg)
    size = len(frame)
    mb = size / 1e6

    t_enc = best_of(args.repeat, lambda: encode(ident, "bench", 1, 0.0, msg))
    t_dec = best_of(args.repeat, lambda: decode(frame, "bench", size, ReplayGuard()))
    t_copy = best_of(args.repeat, lambda: bytearray(frame))
    t_npcopy = best_of(args.repeat, lambda: np.frombuffer(frame, np.uint8).copy())
    t_sha = best_of(args.repeat, lambda: hashlib.sha256(frame).digest())
    t_mhash = best_of(args.repeat, lambda: model_hash(msg.tensors))
    t_memcpy = min(t_copy, t_npcopy)

    assert decode(frame, "bench", size).msg == msg
    print(f"frame: {mb:.1f} MB, {len(msg.tensors)} tensors, best of {args.repeat}")
    rows = [
        ("encode", t_enc), ("decode", t_dec), ("memcpy bytearray(buf)", t_copy),
        ("memcpy np.copy", t_npcopy), ("sha256 (floor)", t_sha), ("model_hash", t_mhash),
    ]
    for name, t in rows:
        print(f"  {name:24s} {t * 1e3:8.1f} ms  {mb / t:9.0f} MB/s")
    print(f"  ratio encode/memcpy  {t_memcpy / t_enc:.3f}   (throughput relative to the faster memcpy)")
    print(f"  ratio decode/memcpy  {t_memcpy / t_dec:.3f}")
    print(f"  ratio encode/sha256  {t_sha / t_enc:.3f}   decode/sha256 {t_sha / t_dec:.3f}")


if __name__ == "__main__":
    main()
