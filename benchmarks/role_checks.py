"""Role checks (SPEC 15.1): honest messages wrongly rejected, per role_slack, under crashes and joins.

Every node here is honest, so every `rejected` event is a wrong rejection. Runs the unmodified
ModestCore on the deterministic harness (tests/core_harness.py) in two scenario families:

- crash: random small networks (as benchmarks/crash_fuzz.py: 5, 8 or 12 nodes, random s, a, sf,
  tau, training time, latency), 1 to N-1 nodes crash at a random time; stall restart on (45 s);
- churn: 30 nodes, s = 5, a = 1 or 2, tau = 10 or 20 (the paper uses 20 under churn); every
  20 s two nodes crash and two new ones join through one bootstrap peer (views differ: joiners
  are pending or unknown for a while, crashed nodes linger for tau rounds).

For each slack it prints honest model messages accepted and rejected (by reason), verification
walks, and stalls (< 5 rounds in 300 s after the crash), side by side.

    .venv/bin/python benchmarks/role_checks.py [RUNS] [SLACKS]   # default 60 runs, slacks 0,1,2,3
"""
from __future__ import annotations

import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from core_harness import CoreNet, pk_of  # noqa: E402
from gossipnode.core.actions import Event, Send  # noqa: E402
from gossipnode.core.config import ModestConfig  # noqa: E402
from gossipnode.core.messages import ModelMsg  # noqa: E402


def _count(net: CoreNet) -> tuple[int, Counter, int]:
    sent = sum(1 for _, _, a in net.events if isinstance(a, Send) and isinstance(a.msg, ModelMsg))
    rej = Counter(a.detail["reason"] for _, _, a in net.events if isinstance(a, Event) and a.kind == "rejected")
    walks = sum(1 for _, _, a in net.events if isinstance(a, Event) and a.kind == "verify_rank")
    return sent, rej, walks


def crash_run(seed: int, slack: int) -> tuple[int, Counter, int, bool]:
    rng = random.Random(seed)
    n = rng.choice([5, 8, 12])
    cfg = ModestConfig(sample_size=rng.choice([3, 4, 6]), aggregators=rng.choice([1, 2]),
                       success_fraction=rng.choice([0.5, 0.75, 1.0]), ping_timeout=2,
                       aggregation_timeout=6, round_timeout=15, inactivity_threshold=rng.choice([2, 4, 10]),
                       bootstrap_wait=2, stall_timeout=45.0, role_slack=slack)
    net = CoreNet(n, cfg, train_time=rng.choice([0.2, 0.3, 0.5, 3.0]), seed=seed,
                  latency=rng.choice([0.001, 0.01, 0.05]))
    net.start()
    t_crash = rng.uniform(0.5, 30)
    net.run_until(t_crash)
    for i in rng.sample(range(n), rng.randint(1, n - 1)):
        net.crash(pk_of(i))
    r0 = net.max_round()
    net.run_until(t_crash + 300)
    return (*_count(net), net.max_round() < r0 + 5)


def churn_run(seed: int, slack: int) -> tuple[int, Counter, int, bool]:
    rng = random.Random(10_000 + seed)
    cfg = ModestConfig(sample_size=5, aggregators=rng.choice([1, 2]), success_fraction=0.8, ping_timeout=2,
                       aggregation_timeout=6, round_timeout=15, inactivity_threshold=rng.choice([10, 20]),
                       bootstrap_wait=2, stall_timeout=45.0, role_slack=slack)
    net = CoreNet(30, cfg, train_time=rng.choice([0.3, 1.0]), seed=seed, latency=rng.choice([0.01, 0.05]))
    net.start()
    alive = list(range(30))
    nxt = 30
    t = 20.0
    while t <= 200.0:
        net.run_until(t)
        for i in rng.sample(alive, 2):
            net.crash(pk_of(i))
            alive.remove(i)
        for _ in range(2):
            net.add_node(nxt, [f"mem://{rng.choice(alive)}"])
            alive.append(nxt)
            nxt += 1
        t += 20.0
    r0 = net.max_round()
    net.run_until(500.0)
    return (*_count(net), net.max_round() < r0 + 5)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    slacks = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "0,1,2,3").split(",")]
    for name, fn in (("crash", crash_run), ("churn", churn_run)):
        for slack in slacks:
            t0 = time.perf_counter()
            sent, rej, walks, stalls = 0, Counter(), 0, 0
            for seed in range(runs):
                s_, r_, w_, st = fn(seed, slack)
                sent += s_
                rej += r_
                walks += w_
                stalls += st
            total = sum(rej.values())
            print(f"{name:5s} slack {slack}: {sent} model messages sent, {total} wrongly rejected "
                  f"({100 * total / max(1, sent):.2f} %) {dict(rej)}, {walks} verification walks, "
                  f"{stalls}/{runs} stalled ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
