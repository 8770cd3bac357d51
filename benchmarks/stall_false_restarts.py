"""False stall restarts in healthy networks: the stall restart on and off, side by side.

Idle nodes cannot tell a quiet network from a dead one, so with `stall_timeout` set they
probe; a probe that finds nobody busy may restart a round the network has long passed.
Runs the unmodified ModestCore on the test harness (tests/core_harness.py): random healthy
networks (10, 30 or 100 nodes, s = 3, 5 or 10, training 0.5-10 s, round time-out 20 or 30 s),
900 virtual seconds each, no crashes; prints rounds, stall checks and restarts per mode.

    .venv/bin/python benchmarks/stall_false_restarts.py [RUNS]    # default 60 (about 6 min)
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from core_harness import CoreNet  # noqa: E402
from gossipnode.core.actions import Event  # noqa: E402
from gossipnode.core.config import ModestConfig  # noqa: E402


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    totals = {"off": [0, 0, 0], "on": [0, 0, 0]}
    t0 = time.perf_counter()
    for seed in range(runs):
        rng = random.Random(seed)
        n, s = rng.choice([10, 30, 100]), rng.choice([3, 5, 10])
        train, rt = rng.choice([0.5, 2.0, 5.0, 10.0]), rng.choice([20.0, 30.0])
        for mode in ("off", "on"):
            cfg = ModestConfig(sample_size=s, ping_timeout=2, aggregation_timeout=10, round_timeout=rt,
                               bootstrap_wait=2, stall_timeout=3 * rt if mode == "on" else None)
            net = CoreNet(n, cfg, train_time=train, seed=seed)
            net.start()
            net.run_until(900.0)
            kinds = [a.kind for _, _, a in net.events if isinstance(a, Event)]
            t = totals[mode]
            t[0] += net.max_round()
            t[1] += kinds.count("stalled")
            t[2] += kinds.count("restart")
            if kinds.count("restart"):
                print(f"  seed {seed}: {n} nodes, s={s}, training {train} s, round time-out {rt} s: "
                      f"{kinds.count('restart')} restart(s) in {kinds.count('stalled')} checks")
    for mode, (rounds, checks, restarts) in totals.items():
        print(f"stall restart {mode:3}: {rounds} rounds in all, {checks} stall checks, {restarts} restarts")
    print(f"rounds on / off: {totals['on'][0] / totals['off'][0]:.4f}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
