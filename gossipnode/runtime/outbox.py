"""Sending: a peer's address from its own signed record, the transport for its scheme, the frame
(encoded in a worker thread when big), and the bookkeeping of failures (logged once per address).
Returns what happened; the node tells the core."""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gossipnode.core.messages import Ping, Pong, message_type
from gossipnode.transport.base import Refused, Transport, TransportError
from gossipnode.wire.codec import encode_frame
from gossipnode.wire.identity import Identity, node_id
from gossipnode.wire.replay import SeqCounter

from .telemetry import Telemetry

log = logging.getLogger("gossipnode.node")
BIG = 4 << 20   # frames above this many tensor bytes are encoded in a worker thread
MAX_BUCKETS = 4096

# outcomes of a send
SENT, NO_ADDRESS, NO_TRANSPORT, FAILED, UNREACHABLE = "sent", "no_address", "no_transport", "failed", "unreachable"


class Outbox:
    def __init__(self, identity: Identity, network_id: str, transports: list[Transport],
                 telemetry: Telemetry, address_of: Callable[[bytes], tuple[str, ...]]) -> None:
        self.identity = identity
        self.network_id = network_id
        self.transports = transports
        self.telemetry = telemetry
        self.address_of = address_of   # the core's view: addresses from the peer's own signed record
        self.seq = SeqCounter()
        self._failing: dict[str, int] = {}   # address or peer -> sends that failed since the last success

    def schemes(self) -> set[str]:
        return {sc for t in self.transports for sc in getattr(t, "schemes", (t.scheme,))}

    def transport_for(self, address: str) -> Transport | None:
        scheme = address.split("://", 1)[0]
        return next((t for t in self.transports if scheme in getattr(t, "schemes", (t.scheme,))), None)

    def address(self, pk: bytes) -> str | None:
        """The peer's address from its own signed record (view or pending join), nothing else:
        no transport hint (e.g. the old HTTP reply-to header) is ever a destination."""
        schemes = self.schemes()
        return next((a for a in self.address_of(pk) if a.split("://", 1)[0] in schemes), None)

    def no_address(self, pk: bytes, what: str) -> str:
        self.telemetry.send_failures += 1
        key = f"peer {node_id(pk)}"
        first = key not in self._failing
        if self._failing.get(key) or len(self._failing) < MAX_BUCKETS:
            self._failing[key] = self._failing.get(key, 0) + 1
        log.log(logging.INFO if first else logging.DEBUG, "no address for peer %s; dropping %s%s",
                node_id(pk), what, " (repeats at debug level)" if first else "")
        return NO_ADDRESS

    def reached(self, pk: bytes) -> None:
        if self._failing:
            self._failing.pop(f"peer {node_id(pk)}", None)

    async def send_to(self, address: str, msg) -> str:
        """One frame to one address. UNREACHABLE: a direct transport (HTTP, memory) got no answer
        (a refusal is an answer; an MQTT failure is the broker link, not the peer)."""
        t = self.transport_for(address)
        if t is None:
            self.telemetry.send_failures += 1
            log.info("no transport for %s", address)
            return NO_TRANSPORT
        size = sum(len(x.data) for x in getattr(msg, "tensors", ()))
        args = (self.identity, self.network_id, self.seq.next(), time.time(), msg)
        # scatter-gather parts: tensor buffers are referenced, the frame is never joined for HTTP
        frame = await asyncio.to_thread(encode_frame, *args) if size > BIG else encode_frame(*args)
        try:
            await t.send(address, frame)
        except TransportError as e:
            self.telemetry.send_failures += 1
            # The first failure to an address is logged at INFO, repeats at DEBUG until it works.
            n = self._failing.get(address, 0)
            if n or len(self._failing) < MAX_BUCKETS:   # bounded: beyond it, repeats stay at INFO
                self._failing[address] = n + 1
            if n == 0 and not isinstance(msg, Ping | Pong):   # peers out of reach: the core's event
                log.info("send %s to %s failed: %s (repeats are logged at debug level until it works)",
                         type(msg).__name__, address, e)
            else:
                log.debug("send %s to %s failed: %s", type(msg).__name__, address, e)
            return UNREACHABLE if getattr(t, "direct", False) and not isinstance(e, Refused) else FAILED
        self.telemetry.sent(message_type(msg), len(frame))
        if self._failing and (n := self._failing.pop(address, 0)):
            log.info("sending to %s works again (after %d failures)", address, n)
        return SENT
