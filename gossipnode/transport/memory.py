"""In-process transport: many nodes in one event loop exchange frames through a hub, no sockets.

Used by the in-process test harness (tests/memnet.py). The receiver's inbound handler (the same
one every transport calls) runs as its own task, as an HTTP request handler does, so a sender
that is cancelled mid-send does not cancel the receiver's work. A frame the receiver rejects
raises `Refused` at the sender, as an HTTP 4xx/5xx answer does (no 503 retry here); an address
with no handler, or one marked down, raises `TransportError`.

May import: the standard library and transport/.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from .base import InboundHandler, OutFrame, Refused, TransportError, as_bytes

SCHEME = "mem"


class MemoryHub:
    """Address -> inbound handler. `down` holds addresses that are unreachable (a crashed or cut
    peer: frames to and from them fail); `taps` are called with (from, to, frame) for every
    frame delivered, e.g. to count message types."""

    def __init__(self) -> None:
        self.handlers: dict[str, InboundHandler] = {}
        self.down: set[str] = set()
        self.taps: list[Callable[[str | None, str, bytes], None]] = []
        self._tasks: set[asyncio.Task] = set()

    def transport(self, name: str) -> MemoryTransport:
        return MemoryTransport(self, f"{SCHEME}://{name}")

    async def deliver(self, address: str, frame: OutFrame, sender: str | None = None) -> str | None:
        """Hand one frame to the handler at `address`; returns its rejection reason (None: taken)."""
        h = self.handlers.get(address)
        if h is None or address in self.down or (sender is not None and sender in self.down):
            raise TransportError(f"{address} unreachable")
        data = as_bytes(frame)
        for tap in self.taps:
            tap(sender, address, data)
        task = asyncio.ensure_future(h(data, sender))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Cancel deliveries still being handled (the harness calls it after stopping the nodes)."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)


class MemoryTransport:
    scheme = SCHEME
    direct = True   # a frame nobody took says the peer is out of reach (as an unanswered HTTP request)

    def __init__(self, hub: MemoryHub, address: str) -> None:
        self.hub = hub
        self.address = address

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address,)

    async def start(self, handler: InboundHandler) -> None:
        self.hub.handlers[self.address] = handler

    async def send(self, address: str, frame: OutFrame) -> None:
        reason = await self.hub.deliver(address, frame, self.address)
        if reason is not None:
            raise Refused(f"{address}: rejected {reason}")

    async def stop(self) -> None:
        self.hub.handlers.pop(self.address, None)
