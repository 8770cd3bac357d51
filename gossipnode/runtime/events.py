"""Round events for programs that embed a node (README, "Python API").

Every event is a dict with at least `round` and `kind`: the core's events (`training`,
`aggregating`, `stalled`, `rejected`, ...) and `evaluated` (`accuracy`, `loss`, `samples`,
`role`, `model_hash`) when a round's model was adopted and evaluated."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger("gossipnode.events")
Event = dict[str, Any]


class EventHub:
    def __init__(self) -> None:
        self._callbacks: list[Callable[[Event], Any]] = []
        self._queues: list[asyncio.Queue[Event | None]] = []

    def subscribe(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call `callback(event)` (on the event loop; keep it quick) for every event. Returns a
        function that unsubscribes."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    async def stream(self, maxsize: int = 1000) -> AsyncIterator[Event]:
        """`async for event in node.events.stream(): ...`; ends when the node has stopped. A
        reader that falls `maxsize` events behind loses the oldest."""
        q: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self._queues.append(q)
        try:
            while (e := await q.get()) is not None:
                yield e
        finally:
            self._queues.remove(q)

    def emit(self, event: Event) -> None:
        for cb in list(self._callbacks):
            try:
                cb(event)
            except Exception:  # a subscriber's bug must not break the node
                log.exception("event callback %r failed", cb)
        for q in self._queues:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    def close(self) -> None:
        for q in self._queues:
            if q.full():
                q.get_nowait()
            q.put_nowait(None)
