"""How late the event loop runs what is due: a task sleeps `every` seconds and records by how
much it woke late. A loop held by a long callback, or waiting for the GIL that another thread
holds (training, numpy), shows here. `/v1/status` reports it as `event_loop`."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class LoopLag:
    def __init__(self, every: float = 0.05, keep: int = 1200) -> None:
        self.every = every
        self.recent: deque[float] = deque(maxlen=keep)   # lag per sample, seconds (last minute)
        self.max_lag = 0.0   # since start
        self.samples = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.every)
            self.add(max(0.0, loop.time() - t0 - self.every))

    def add(self, lag: float) -> None:
        self.recent.append(lag)
        self.max_lag = max(self.max_lag, lag)
        self.samples += 1

    def status(self) -> dict[str, Any]:
        xs = sorted(self.recent)
        p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else 0.0
        return {"event_loop": {"lag_max_ms": round(1e3 * self.max_lag, 2),
                               "lag_recent_max_ms": round(1e3 * xs[-1], 2) if xs else 0.0,
                               "lag_p99_ms": round(1e3 * p99, 2), "samples": self.samples}}
