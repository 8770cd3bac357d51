"""The one interface every transport implements."""
from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol
from collections.abc import Awaitable, Callable

# The network source of the frame being handled (e.g. the HTTP peer's IP), set by a transport
# around its handler call: the node rate-limits joins per source with it. None: unknown.
INBOUND_SOURCE: ContextVar[str | None] = ContextVar("gossipnode_inbound_source", default=None)

# Called for every inbound frame: (frame bytes, reply-to hint or None) -> None.
# The handler never raises; it counts and logs what it rejects.
InboundHandler = Callable[[bytes, str | None], Awaitable[str | None]]


# What send() takes: bytes, or a wire.codec.Frame (the encoded frame as scatter-gather parts,
# len() = its size, bytes() = joined). A transport that needs one buffer calls as_bytes().
OutFrame = Any


def as_bytes(frame: OutFrame) -> bytes:
    return frame if isinstance(frame, bytes) else bytes(frame)


class TransportError(Exception):
    """A frame could not be delivered (peer unreachable, refused, timed out)."""


class Transport(Protocol):
    scheme: str  # the URL scheme this transport sends to, e.g. "http"

    @property
    def addresses(self) -> tuple[str, ...]: ...

    async def start(self, handler: InboundHandler) -> None: ...

    async def send(self, address: str, frame: OutFrame) -> None: ...

    async def stop(self) -> None: ...
