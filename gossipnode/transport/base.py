"""The one interface every transport implements, and the plain options they are built from.

May import: the standard library only (transports never import config, the node or runtime).
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
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


class Refused(TransportError):
    """The peer answered and refused the frame: it is reachable (not a sign of a partition)."""


class Transport(Protocol):
    scheme: str  # the URL scheme this transport sends to, e.g. "http"

    @property
    def addresses(self) -> tuple[str, ...]: ...

    async def start(self, handler: InboundHandler) -> None: ...

    async def send(self, address: str, frame: OutFrame) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True)
class TransportOptions:
    """Plain values a transport factory builds from (the node fills them from its config).
    A transport that needs a setting none of these carries adds a field here."""
    node_id: str
    network_id: str
    max_size: int                     # largest frame accepted or sent, in bytes
    # HTTP (also serves the node's REST API, so it can be handed the node's aiohttp app)
    http_address: str = ""            # this node's advertised URL, path prefix included
    app: Any = None                   # the aiohttp web.Application to add the route to; None: a new one
    path_prefix: str = ""
    http_timeout: float = 15.0
    answer_timeout: float | None = None
    inbound_budget: int | None = None
    min_rate: float = float(1 << 20)  # bytes/s
    local_host: str | None = None
    # MQTT
    broker: str = ""
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_ca: str = ""
