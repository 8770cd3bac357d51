"""In-process transport: a hub of mailboxes, for tests and the simulator.

May import: the standard library and transport/.
"""
from __future__ import annotations

from .base import InboundHandler, OutFrame, TransportError, as_bytes


class MemoryHub:
    def __init__(self) -> None:
        self.handlers: dict[str, InboundHandler] = {}
        self.down: set[str] = set()

    def transport(self, name: str) -> MemoryTransport:
        return MemoryTransport(self, f"mem://{name}")


class MemoryTransport:
    scheme = "mem"

    def __init__(self, hub: MemoryHub, address: str) -> None:
        self.hub = hub
        self.address = address

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address,)

    async def start(self, handler: InboundHandler) -> None:
        self.hub.handlers[self.address] = handler

    async def send(self, address: str, frame: OutFrame) -> None:
        h = self.hub.handlers.get(address)
        if h is None or address in self.hub.down:
            raise TransportError(f"{address} unreachable")
        await h(as_bytes(frame), self.address)

    async def stop(self) -> None:
        self.hub.handlers.pop(self.address, None)
