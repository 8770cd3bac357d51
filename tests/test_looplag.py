"""runtime/looplag.py: the event loop's lag as `/v1/status` reports it (`event_loop`)."""
import asyncio
import time

from gossipnode.runtime.looplag import LoopLag
from gossipnode.runtime.telemetry import Telemetry


def test_lag_monitor_sees_a_blocked_loop() -> None:
    async def main() -> dict:
        lag = LoopLag(every=0.01)
        task = asyncio.ensure_future(lag.run())
        await asyncio.sleep(0.05)
        time.sleep(0.2)   # a callback holding the loop
        await asyncio.sleep(0.05)
        task.cancel()
        return lag.status()["event_loop"]

    s = asyncio.run(main())
    assert s["samples"] >= 3
    assert s["lag_max_ms"] >= 150 and s["lag_recent_max_ms"] == s["lag_max_ms"]
    assert 0 <= s["lag_p99_ms"] <= s["lag_max_ms"]


def test_lag_window_is_bounded_and_status_empty_at_start() -> None:
    lag = LoopLag(keep=10)
    assert lag.status()["event_loop"] == {"lag_max_ms": 0.0, "lag_recent_max_ms": 0.0, "lag_p99_ms": 0.0,
                                          "samples": 0}
    lag.add(1.0)
    for _ in range(20):
        lag.add(0.001)
    s = lag.status()["event_loop"]
    assert len(lag.recent) == 10 and s["samples"] == 21
    assert s["lag_max_ms"] == 1000.0 and s["lag_recent_max_ms"] == 1.0


def test_telemetry_owns_one() -> None:
    assert isinstance(Telemetry().looplag, LoopLag)
