"""A node stays responsive while it trains (issue 12, item 6): `GET /v1/status` latency of one
node process while it is idle (alone, nothing to train) and while it trains (a second node joins;
both gossip every 0.5 s, so node A trains back to back), in one run, plus the worst single
request (the first training included: a stall on the first optimizer step shows here) and the
node's own event-loop lag (`event_loop` in /v1/status). 3 repetitions; min / median / max.

    PYTHONPATH=$PWD python benchmarks/status_latency.py [REQUESTS] [REPS] [-- extra node flags]

GN_PEER_NICE=N runs node B (and its children) at niceness N: a stand-in for a peer on another
machine, as both nodes share the same 2 cores here. The training phase starts once both nodes
have trained a round (B's start-up is not in it; the worst request still includes it).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PEER_NICE = int(os.environ.get("GN_PEER_NICE", "0"))
ARGS = ["--protocol", "gossip", "--gossip-interval", "0.5", "--bootstrap-wait", "0", "--local-epochs", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, d: Path, extra: list[str], nice: int = 0) -> subprocess.Popen:
    log = open(d / f"node-{port}.log", "ab")  # noqa: SIM115  (closed with the process)
    return subprocess.Popen([sys.executable, "-m", "gossipnode", "start", "--port", str(port),
                             "--state-dir", str(d / str(port)), *ARGS, *extra], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=(lambda: os.nice(nice)) if nice else None,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})


def status(url: str) -> dict:
    with urllib.request.urlopen(url + "/v1/status", timeout=10) as r:
        return json.loads(r.read())


def wait_up(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status(url)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def sample(url: str, n: int, every: float = 0.02) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status(url)
        out.append(time.perf_counter() - t0)
        time.sleep(every)
    return out


def p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(0.99 * len(xs)))]


def one_run(n: int, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pa, pb = free_port(), free_port()
        ua, ub = f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"
        a = start(pa, d, ["--shard", "0/2", *extra])
        b = None
        try:
            wait_up(ua)
            time.sleep(2.0)   # the start-up evaluation is over
            idle = sample(ua, n)
            b = start(pb, d, ["--shard", "1/2", "--peers", ua, *extra], PEER_NICE)
            wait_up(ub)
            # from the moment the peer is up: the first training is in what is measured
            first = []
            while status(ua)["rounds_trained"] < 1 or status(ub)["rounds_trained"] < 1:
                first += sample(ua, 5)   # B's start-up (torch warm-up) is over too
            r0 = status(ua)["rounds_trained"]
            busy = sample(ua, n)
            s = status(ua)
            trained = s["rounds_trained"] - r0
        finally:
            for p in (a, b):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in (a, b):
                if p is not None:
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:
                        p.kill()
    lag = s.get("event_loop", {})
    return {"idle_p99_ms": 1e3 * p99(idle), "train_p99_ms": 1e3 * p99(busy),
            "ratio": p99(busy) / p99(idle), "max_ms": 1e3 * max(first + busy),
            "loop_lag_max_ms": lag.get("lag_max_ms", float("nan")),
            "rounds_trained_while_measured": trained}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    n = int(argv[0]) if argv else 300
    reps = int(argv[1]) if len(argv) > 1 else 3
    runs = [one_run(n, extra) for _ in range(reps)]
    print(f"GET /v1/status, {n} requests per phase, {reps} runs; extra flags: {' '.join(extra) or '-'}; "
          f"peer nice {PEER_NICE}")
    print(f"{'':34} {'min':>9} {'median':>9} {'max':>9}")
    for k in runs[0]:
        xs = [r[k] for r in runs]
        print(f"{k:34} {min(xs):9.2f} {statistics.median(xs):9.2f} {max(xs):9.2f}")
    print("goal: ratio (train p99 / idle p99) <= 1.5, max_ms (worst request, first training included) <= 100")


if __name__ == "__main__":
    main()
