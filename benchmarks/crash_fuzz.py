"""Liveness under random crashes, with and without the stall restart, side by side.

Runs the unmodified ModestCore on the deterministic test harness (tests/core_harness.py):
random small networks (5, 8 or 12 nodes, random s, a, sf, tau, training time, latency), where
1 to N-1 random nodes crash at a random time between 0.5 s (still bootstrapping) and 30 s.
A run "stalls" when the survivors complete fewer than 5 rounds in the 300 s after the crash.

    .venv/bin/python benchmarks/crash_fuzz.py [RUNS]      # default 400 runs per mode
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from core_harness import CoreNet, pk_of  # noqa: E402
from gossipnode.core.actions import Event  # noqa: E402
from gossipnode.core.config import ModestConfig  # noqa: E402


def one(seed: int, stall: float | None) -> tuple[bool, int, str]:
    rng = random.Random(seed)
    n = rng.choice([5, 8, 12])
    cfg = ModestConfig(sample_size=rng.choice([3, 4, 6]), aggregators=rng.choice([1, 2]),
                       success_fraction=rng.choice([0.5, 0.75, 1.0]), ping_timeout=2,
                       aggregation_timeout=6, round_timeout=15, inactivity_threshold=rng.choice([2, 4, 10]),
                       bootstrap_wait=2, stall_timeout=stall)
    net = CoreNet(n, cfg, train_time=rng.choice([0.2, 0.3, 0.5, 3.0]), seed=seed,
                  latency=rng.choice([0.001, 0.01, 0.05]))
    net.start()
    t_crash = rng.uniform(0.5, 30)
    net.run_until(t_crash)
    killed = rng.randint(1, n - 1)
    for i in rng.sample(range(n), killed):
        net.crash(pk_of(i))
    r0 = net.max_round()
    net.run_until(t_crash + 300)
    restarts = sum(1 for _, _, a in net.events if isinstance(a, Event) and a.kind == "restart")
    desc = f"seed {seed}: {n} nodes, {killed} crashed at t={t_crash:.1f} s, round {r0} -> {net.max_round()}"
    return net.max_round() < r0 + 5, restarts, desc


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    for label, stall in (("stall restart off", None), ("stall restart on (45 s)", 45.0)):
        t0 = time.perf_counter()
        stalls, restarts = [], 0
        for seed in range(runs):
            stalled, r, desc = one(seed, stall)
            restarts += r
            if stalled:
                stalls.append(desc)
        print(f"{label}: {len(stalls)} of {runs} runs stalled, {restarts} restarts "
              f"({time.perf_counter() - t0:.0f} s)")
        for d in stalls:
            print("   ", d)


if __name__ == "__main__":
    main()
