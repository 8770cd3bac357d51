"""What --join-pow BITS costs an honest joiner (once per key) and a receiver (one hash per joiner).

    PYTHONPATH=. .venv/bin/python benchmarks/join_pow.py [--bits 12 16 20] [--keys 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

from gossipnode.core.auth import pow_bits, solve_pow
from gossipnode.wire.identity import Identity


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, nargs="+", default=[12, 16, 20])
    ap.add_argument("--keys", type=int, default=5)
    a = ap.parse_args()
    keys = [Identity.generate().public_key for _ in range(a.keys)]
    t0 = time.perf_counter()
    for _ in range(10000):
        pow_bits(keys[0], 12345)
    check_us = (time.perf_counter() - t0) / 10000 * 1e6
    print(f"receiver: one check {check_us:.2f} us; a 1,000-key join flood then costs the flooder "
          f"about 1,000 x the joiner time below")
    for bits in a.bits:
        ts = []
        for k in keys:
            t0 = time.perf_counter()
            n = solve_pow(k, bits)
            ts.append(time.perf_counter() - t0)
            assert pow_bits(k, n) >= bits
        print(f"{bits:3d} bits: honest joiner median {statistics.median(ts):8.3f} s, max {max(ts):8.3f} s "
              f"over {len(keys)} keys (expected 2^{bits} = {2**bits:,} hashes; "
              f"{statistics.median(ts) * 1e6 / check_us:,.0f} receiver checks)")


if __name__ == "__main__":
    main()
