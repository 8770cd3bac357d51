"""MQTT discovery bookkeeping and connection helpers, kept apart from the transport's I/O.

`PeerTracker` applies already validated announce / will records (wire.announce) to what the
transport knows: the session each peer last announced, and the wills held for their grace
(SPEC 14.3). It is sans-I/O: records and times in, the node's callbacks out.

A broker outage is not a departure: a broker shutdown publishes the wills of live nodes, so a
will is held and counts only after `will_grace` seconds of our own connected time without a new
announce from that node (an announce drops it). Records are only ever used as hints: the node
sends a discovered peer a signed ADVERTISE, and it enters the view when it answers.

`OwnRecords` holds this node's own announce and will, and decides when to publish the announce
again after another client wrote our topic. `BrokerUrl`, `topic_safe` and `socket_dead` are the
small helpers of the connection.

May import: the standard library and wire/ (never config, the node or runtime).
"""
from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..wire.announce import Announce, make_record, transports_of
from ..wire.identity import Identity

log = logging.getLogger("gossipnode.transport.mqtt")

WILL_GRACE_S = 5.0                # a will counts after this much of our connected time without a re-announce
MAX_TRACKED = 100_000             # peers (sessions, held wills) remembered at most
_TOPIC_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")

PeerCallback = Callable[[tuple[str, ...], bytes], None]
GoneCallback = Callable[[bytes], None]


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        u = urlsplit(url if "://" in url else f"mqtt://{url}")
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"--broker must look like mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
        tls = u.scheme == "mqtts"
        return cls(u.hostname, u.port or (8883 if tls else 1883), tls)


def topic_safe(network_id: str) -> str:
    if not _TOPIC_SAFE.match(network_id):
        raise ValueError(f"network id {network_id!r} cannot be used in MQTT topics "
                         "(allowed: letters, digits, '.', '_', '-', at most 64)")
    return network_id


def socket_dead(client: Any) -> bool:
    """The event loop stopped reading the connection's socket but no disconnect was reported
    (seen on a broker shutdown under uvloop: a write registered as the socket closed): paho
    has no socket, or the socket is at EOF / has had unread bytes while paho read nothing
    for over 1 s."""
    paho = getattr(client, "_client", None)
    if paho is None:
        return False
    sock = getattr(paho, "_sock", False)
    if sock is None:
        return True
    if not isinstance(sock, socket.socket):
        return False
    try:   # peek at the raw socket (never consumes; for TLS it sees the encrypted bytes)
        data = socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    # paho 2.x keeps the time of its last read in `_last_bytes_received` (1.x: `_last_msg_in`)
    last_in = getattr(paho, "_last_bytes_received", getattr(paho, "_last_msg_in", None))
    return not data or (isinstance(last_in, float) and time.monotonic() - last_in > 1.0)


def drop_socket(client: Any) -> None:
    """Close a dead connection's socket so that leaving `async with aiomqtt.Client` does not
    wait its time-out (10 s) for a DISCONNECT that the unpolled socket can never write: peers
    hold our will for only `will_grace` (SPEC 14.3, 14.4)."""
    paho = getattr(client, "_client", None)
    close = getattr(paho, "_sock_close", None)
    if callable(close):
        try:
            close()
        except OSError:
            pass


class PeerTracker:
    """Peers' announced sessions and held wills. `stats` is the transport's counter dict."""

    def __init__(self, will_grace: float, stats: dict[str, int], reject: Callable[[str], None]) -> None:
        self.will_grace = will_grace
        self.stats = stats
        self.reject = reject
        self.on_peer: PeerCallback = lambda addresses, pk: None
        self.on_peer_gone: GoneCallback = lambda pk: None
        # peer -> (session, ts) of its latest valid "up" record
        self.peer_sessions: dict[bytes, tuple[str, int]] = {}
        # wills held for the grace period (SPEC 14.3): peer -> (session, node id, time received)
        self.held_wills: dict[bytes, tuple[str, str, float]] = {}

    def record(self, rec: Announce, now: float) -> bool:
        """Apply a peer's validated record. True when it is a will now held for the grace."""
        known = self.peer_sessions.get(rec.public_key)
        if rec.status == "up":
            if known is not None and known[0] != rec.session and rec.ts < known[1]:
                self.stats["stale_announces"] += 1   # an older session's record (replayed)
                self.reject("stale_announce")
                return False
            self.stats["announces"] += 1
            if self.held_wills.pop(rec.public_key, None) is not None:
                self.stats["wills_withdrawn"] += 1   # it re-announced: the broker went away, not it
                log.info("peer %s re-announced; its held MQTT last will is dropped", rec.node_id)
            self.peer_sessions[rec.public_key] = (rec.session, rec.ts)
            while len(self.peer_sessions) > MAX_TRACKED:
                self.peer_sessions.pop(next(iter(self.peer_sessions)))
            self.on_peer(rec.addresses, rec.public_key)
            return False
        # A will counts only for the session the node's latest announce named, and only once:
        # the will of an older session (the node is back), a replayed one, or one for a session
        # this node never saw announced (e.g. a retained tombstone) changes nothing.
        if known is None or known[0] != rec.session or rec.public_key in self.held_wills:
            self.stats["stale_wills"] += 1
            self.reject("stale_will")
            return False
        # Held, not taken: a broker shutdown publishes the wills of live nodes, which then
        # reconnect and re-announce (a new session). check() counts it after the grace.
        self.stats["wills_held"] += 1
        self.held_wills[rec.public_key] = (rec.session, rec.node_id, now)
        while len(self.held_wills) > MAX_TRACKED:
            self.held_wills.pop(next(iter(self.held_wills)))
        log.info("peer %s: MQTT last will held for %.1f s of connected time", rec.node_id, self.will_grace)
        return True

    def check(self, now: float, connected: bool, last_connect: float | None) -> int:
        """Count the held wills whose grace has run out: `will_grace` seconds after the later of
        the will's arrival and our latest (re)connect, while connected, with no re-announce."""
        if not connected or not self.held_wills:
            return 0
        since = last_connect if last_connect is not None else -1e18
        due = [pk for pk, (_, _, t) in self.held_wills.items() if now - max(t, since) >= self.will_grace]
        for pk in due:
            session, nid, _ = self.held_wills.pop(pk)
            known = self.peer_sessions.get(pk)
            if known is None or known[0] != session:
                continue   # re-announced meanwhile (the announce path withdraws too)
            self.stats["wills"] += 1
            # keep the announce's ts (older records stay stale); "" matches no will: once only
            self.peer_sessions[pk] = ("", known[1])
            log.info("peer %s is gone (MQTT last will, not re-announced within %.1f s)", nid,
                     self.will_grace)
            self.on_peer_gone(pk)
        return len(due)


class OwnRecords:
    """This connection's announce and will payloads; restores an overwritten announce at most once
    a second (a write within that second is answered when it ends)."""

    def __init__(self) -> None:
        self.announce: bytes | None = None
        self.will: bytes | None = None
        self.last_restore = -1e9
        self.restore_pending = False

    def new_announce(self, identity: Identity, network_id: str, session: str,
                     addresses: tuple[str, ...]) -> bytes:
        self.announce = make_record(identity, network_id, "up", session, addresses, transports_of(addresses))
        return self.announce

    def new_will(self, identity: Identity, network_id: str, session: str) -> bytes:
        self.will = make_record(identity, network_id, "gone", session, (), ())
        return self.will

    def should_restore(self, payload: bytes) -> bool:
        """A live write on our announce topic: True (and a restore is pending) when ours must be
        published again. Our own will means the broker is dropping this connection: the
        reconnect re-announces."""
        if payload == self.will or self.announce is None or payload == self.announce or self.restore_pending:
            return False
        self.restore_pending = True
        return True

    def restore_delay(self, now: float) -> float:
        return max(0.0, self.last_restore + 1.0 - now)
