"""MQTT transport: frames travel through a broker (e.g. Mosquitto) via per-node inbox topics.

Layout, payloads and rules are in protocol/SPEC.md section 14 ("MQTT binding"). In short:

- a node's MQTT address is ``mqtt://<node_id>``; it names the node's inbox on the broker the
  receiver is configured with (``--broker``), so every node derives every other node's topic;
- ``gossipnode/<network>/inbox/<node_id>``: frames, QoS 1, cut into chunks of at most
  `chunk_size` bytes with a small binary header (message id, index, count, total length,
  reply-to); the receiver reassembles with bounded memory and a timeout and drops duplicates
  (QoS 1 delivers at least once) by message id;
- ``gossipnode/<network>/announce/<node_id>``: a retained, signed JSON announce record
  (addresses, public key, transports, session); the MQTT last will replaces it with a signed
  ``"gone"`` record when the connection dies without a clean stop, and a clean stop clears it.

Every connection gets a fresh random session id (named in that connection's announce and will)
and a fresh random client id that is not derived from anything public, so another broker client
can neither take the connection over (MQTT drops the older of two connections with one client
id) nor make an old or replayed will count: a will is taken only for the session the node's
latest announce named. Broker ACLs (deploy/mosquitto-acl.conf) are the real defence on MQTT.

A broker outage is not a departure: a broker shutdown publishes the wills of live nodes, so a
will is held and counts only after `will_grace` seconds of our own connected time without a new
announce from that node (an announce drops it); reconnect back-off is capped at 1 s.

Announce and will records come from the broker and are untrusted: they are size-limited,
strictly validated and signature-checked, and only ever used as hints (the node sends the
discovered peer a signed ADVERTISE; it enters the view when it answers).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import socket
import ssl
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..wire.identity import node_id as node_id_of
from ..wire.identity import verify
from .base import InboundHandler, OutFrame, TransportError, as_bytes

if TYPE_CHECKING:
    from gossipnode.runtime.config import NodeConfig
    from ..wire.identity import Identity

log = logging.getLogger(__name__)

SCHEME = "mqtt"
TOPIC_ROOT = "gossipnode"
CHUNK_MAGIC = b"GNC1"
CHUNK_HEADER = struct.Struct(">4s16sIIIH")   # magic, msg id, index, count, total length, reply-to length
DEFAULT_CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 1024
MAX_REPLY_TO = 256
ANNOUNCE_MAX_BYTES = 4096
ANNOUNCE_VERSION = 1
ANNOUNCE_SIGN_PREFIX = b"gossipnode-mqtt-announce-v1\x00"
MAX_ADDRESSES = 8
MAX_ADDRESS_LEN = 256
KNOWN_TRANSPORTS = frozenset({"http", "mqtt"})
TOMBSTONE_EXPIRY_S = 600          # a crashed node's retained "gone" record expires after this
WILL_GRACE_S = 5.0                # a will counts after this much of our connected time without a re-announce
_HEX16 = re.compile(r"[0-9a-f]{16}\Z")
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX128 = re.compile(r"[0-9a-f]{128}\Z")
_TOPIC_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")

PeerCallback = Callable[[tuple[str, ...], bytes], None]
GoneCallback = Callable[[bytes], None]


class AnnounceError(ValueError):
    """An announce or will record from the broker failed validation."""


# ---- chunk format -------------------------------------------------------------------------------
def encode_chunks(frame: bytes, reply_to: str, chunk_size: int, msg_id: bytes | None = None) -> list[bytes]:
    """Cut `frame` into MQTT payloads: header + reply-to + at most `chunk_size` frame bytes each."""
    msg_id = msg_id or os.urandom(16)
    rt = reply_to.encode()
    if len(rt) > MAX_REPLY_TO:
        raise ValueError("reply-to address too long")
    count = max(1, -(-len(frame) // chunk_size))
    view = memoryview(frame)
    return [CHUNK_HEADER.pack(CHUNK_MAGIC, msg_id, i, count, len(frame), len(rt)) + rt
            + bytes(view[i * chunk_size:(i + 1) * chunk_size]) for i in range(count)]


@dataclass(frozen=True)
class Chunk:
    msg_id: bytes
    index: int
    count: int
    total: int
    reply_to: str | None
    data: bytes


def decode_chunk(payload: bytes, max_size: int) -> Chunk:
    """Parse and validate one chunk; raises ValueError with a short reason."""
    if len(payload) < CHUNK_HEADER.size:
        raise ValueError("short_chunk")
    magic, msg_id, index, count, total, rlen = CHUNK_HEADER.unpack_from(payload)
    if magic != CHUNK_MAGIC:
        raise ValueError("bad_chunk_magic")
    if total > max_size:
        raise ValueError("too_large")
    if count < 1 or index >= count or count > max(1, -(-total // MIN_CHUNK_SIZE)):
        raise ValueError("bad_chunk_count")
    if rlen > MAX_REPLY_TO or CHUNK_HEADER.size + rlen > len(payload):
        raise ValueError("bad_chunk_reply_to")
    start = CHUNK_HEADER.size + rlen
    try:
        reply_to = payload[CHUNK_HEADER.size:start].decode() or None
    except UnicodeDecodeError:
        raise ValueError("bad_chunk_reply_to") from None
    data = payload[start:]
    if len(data) > total or (count == 1 and len(data) != total):
        raise ValueError("bad_chunk_length")
    return Chunk(msg_id, index, count, total, reply_to, data)


@dataclass
class _Partial:
    total: int
    count: int
    reply_to: str | None
    deadline: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects chunks into frames with bounded memory; drops duplicates and stale partials."""

    def __init__(self, max_size: int, max_pending_bytes: int, timeout: float,
                 max_partials: int = 256, remember: int = 8192) -> None:
        self.max_size = max_size
        self.max_pending_bytes = max_pending_bytes
        self.timeout = timeout
        self.max_partials = max_partials
        self.remember = remember
        self.partials: OrderedDict[bytes, _Partial] = OrderedDict()
        self.pending_bytes = 0
        self.done: OrderedDict[bytes, None] = OrderedDict()   # ids of delivered (or dropped) frames
        self.duplicates = 0
        self.expired = 0

    def _finish(self, msg_id: bytes) -> None:
        self.done[msg_id] = None
        while len(self.done) > self.remember:
            self.done.popitem(last=False)

    def expire(self, now: float) -> int:
        n = 0
        for mid in [m for m, p in self.partials.items() if p.deadline <= now]:
            p = self.partials.pop(mid)
            self.pending_bytes -= p.size
            self._finish(mid)
            n += 1
        self.expired += n
        return n

    def add(self, c: Chunk, now: float) -> tuple[bytes, str | None] | None:
        """Returns (frame, reply_to) when `c` completes a frame; raises ValueError to reject."""
        if c.msg_id in self.done:
            self.duplicates += 1
            return None
        if c.count == 1:
            self._finish(c.msg_id)
            return c.data, c.reply_to
        p = self.partials.get(c.msg_id)
        if p is None:
            if len(self.partials) >= self.max_partials:
                raise ValueError("reassembly_full")
            p = _Partial(c.total, c.count, c.reply_to, now + self.timeout)
            self.partials[c.msg_id] = p
        elif (p.total, p.count) != (c.total, c.count):
            raise ValueError("inconsistent_chunk")
        if c.index in p.chunks:
            self.duplicates += 1
            return None
        if p.size + len(c.data) > p.total or self.pending_bytes + len(c.data) > self.max_pending_bytes:
            self.partials.pop(c.msg_id)
            self.pending_bytes -= p.size
            self._finish(c.msg_id)
            raise ValueError("reassembly_overflow")
        p.chunks[c.index] = c.data
        p.size += len(c.data)
        self.pending_bytes += len(c.data)
        if len(p.chunks) < p.count:
            return None
        self.partials.pop(c.msg_id)
        self.pending_bytes -= p.size
        self._finish(c.msg_id)
        if p.size != p.total:
            raise ValueError("bad_chunk_length")
        return b"".join(p.chunks[i] for i in range(p.count)), p.reply_to


# ---- announce / will records --------------------------------------------------------------------
def _signing_bytes(network_id: str, record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "sig"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return ANNOUNCE_SIGN_PREFIX + network_id.encode() + b"\x00" + hashlib.sha256(canon).digest()


def make_record(identity: Identity, network_id: str, status: str, session: str,
                addresses: tuple[str, ...], transports: tuple[str, ...]) -> bytes:
    rec: dict[str, Any] = {
        "v": ANNOUNCE_VERSION, "status": status, "node_id": identity.node_id,
        "public_key": identity.public_key.hex(), "session": session,
        "addresses": list(addresses) if status == "up" else [],
        "transports": list(transports) if status == "up" else [],
        "ts": int(time.time()),
    }
    rec["sig"] = identity.sign(_signing_bytes(network_id, rec)).hex()
    return json.dumps(rec, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Announce:
    status: str              # "up" or "gone"
    node_id: str
    public_key: bytes
    session: str
    addresses: tuple[str, ...]
    transports: tuple[str, ...]
    ts: int = 0


def parse_record(payload: bytes, network_id: str, topic_node_id: str) -> Announce:
    """Strictly validate an announce/will record from the broker (untrusted)."""
    if len(payload) > ANNOUNCE_MAX_BYTES:
        raise AnnounceError("announce too large")
    try:
        rec = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise AnnounceError("announce is not JSON") from None
    keys = {"v", "status", "node_id", "public_key", "session", "addresses", "transports", "ts", "sig"}
    if not isinstance(rec, dict) or set(rec) != keys:
        raise AnnounceError("announce has wrong keys")
    if rec["v"] != ANNOUNCE_VERSION or rec["status"] not in ("up", "gone"):
        raise AnnounceError("unknown announce version or status")
    nid, pk, sess, sig = rec["node_id"], rec["public_key"], rec["session"], rec["sig"]
    if not all(isinstance(x, str) for x in (nid, pk, sess, sig)):
        raise AnnounceError("announce field types")
    if not (_HEX16.match(nid) and _HEX64.match(pk) and _HEX32.match(sess) and _HEX128.match(sig)):
        raise AnnounceError("announce field format")
    if type(rec["ts"]) is not int:
        raise AnnounceError("announce ts")
    pkb = bytes.fromhex(pk)
    if nid != topic_node_id or node_id_of(pkb) != nid:
        raise AnnounceError("node id does not match topic or public key")
    addrs, trs = rec["addresses"], rec["transports"]
    if not (isinstance(addrs, list) and isinstance(trs, list)) or len(addrs) > MAX_ADDRESSES or len(trs) > 4:
        raise AnnounceError("announce lists")
    for a in addrs:
        if not isinstance(a, str) or len(a) > MAX_ADDRESS_LEN or "://" not in a:
            raise AnnounceError("bad address")
        if a.split("://", 1)[0] not in ("http", "https", SCHEME):
            raise AnnounceError("unknown address scheme")
    if not all(isinstance(t, str) and t in KNOWN_TRANSPORTS for t in trs):
        raise AnnounceError("unknown transport")
    if rec["status"] == "up" and f"{SCHEME}://{nid}" not in addrs:
        raise AnnounceError("announce lacks its own mqtt address")
    if not verify(pkb, bytes.fromhex(sig), _signing_bytes(network_id, rec)):
        raise AnnounceError("bad announce signature")
    return Announce(rec["status"], nid, pkb, sess, tuple(addrs), tuple(trs), rec["ts"])


# ---- broker URL ---------------------------------------------------------------------------------
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


# ---- the transport ------------------------------------------------------------------------------
class MqttTransport:
    scheme = SCHEME

    def __init__(self, broker: str, node_id: str, network_id: str, *, username: str = "",
                 password: str = "", ca_file: str = "", max_size: int = 256 << 20,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, reassembly_timeout: float = 60.0,
                 max_pending_bytes: int = 512 << 20, keepalive: int = 10,
                 backoff_initial: float = 0.25, backoff_max: float = 1.0,
                 publish_timeout: float = 30.0, connect_wait: float = 5.0,
                 will_grace: float = WILL_GRACE_S) -> None:
        if chunk_size < MIN_CHUNK_SIZE:
            raise ValueError(f"chunk size must be >= {MIN_CHUNK_SIZE}")
        if not _HEX16.match(node_id):
            raise ValueError(f"bad node id {node_id!r}")
        self.broker = BrokerUrl.parse(broker)
        self.node_id = node_id
        self.network_id = topic_safe(network_id)
        self.username = username or None
        self.password = password or None
        self.ca_file = ca_file
        self.max_size = max_size
        self.chunk_size = chunk_size
        self.keepalive = keepalive
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.publish_timeout = publish_timeout
        self.connect_wait = connect_wait
        self.will_grace = will_grace
        self.prefix = f"{TOPIC_ROOT}/{self.network_id}"
        self.inbox = self.inbox_topic(node_id)
        self.reassembler = Reassembler(max_size, max(max_pending_bytes, 2 * chunk_size), reassembly_timeout)
        # both fresh for every connection (_new_session); neither is derivable from the other
        self.session = os.urandom(16).hex()
        self.client_id = f"gn-{node_id}-{os.urandom(8).hex()}"
        # set by bind() (the node); without them the transport still moves frames
        self.identity: Identity | None = None
        self.announce_addresses: tuple[str, ...] = (self.address,)
        self.on_peer: PeerCallback = lambda addresses, pk: None
        self.on_peer_gone: GoneCallback = lambda pk: None
        self.on_reject: Callable[[str], Any] = lambda reason: None
        # peer -> (session, ts) of its latest valid "up" record
        self.peer_sessions: dict[bytes, tuple[str, int]] = {}
        # wills held for the grace period (SPEC 14.3): peer -> (session, node id, time received)
        self.held_wills: dict[bytes, tuple[str, str, float]] = {}
        self.stats = {"connects": 0, "disconnects": 0, "frames_in": 0, "frames_out": 0,
                      "chunks_in": 0, "chunks_out": 0, "duplicates": 0, "rejected": 0,
                      "announces": 0, "wills": 0, "stale_wills": 0, "stale_announces": 0,
                      "announce_restored": 0, "wills_held": 0, "wills_withdrawn": 0}
        self._announce_payload: bytes | None = None
        self._will_payload: bytes | None = None
        self._last_restore = -1e9
        self._restore_pending = False
        self.last_disconnect: float | None = None
        self.last_connect: float | None = None
        self._handler: InboundHandler | None = None
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        self._runner: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._sem = asyncio.Semaphore(64)

    @classmethod
    def from_config(cls, cfg: NodeConfig, node_id: str) -> MqttTransport:
        return cls(cfg.broker, node_id, cfg.network_id, username=cfg.mqtt_username,
                   password=cfg.mqtt_password, ca_file=cfg.mqtt_ca,
                   max_size=int(cfg.max_message_mb * (1 << 20)))

    # ---- naming -------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{SCHEME}://{self.node_id}"

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address,)

    def inbox_topic(self, node_id: str) -> str:
        return f"{self.prefix}/inbox/{node_id}"

    def announce_topic(self, node_id: str) -> str:
        return f"{self.prefix}/announce/{node_id}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def bind(self, identity: Identity, addresses: tuple[str, ...], on_peer: PeerCallback,
             on_peer_gone: GoneCallback, on_reject: Callable[[str], Any] | None = None) -> None:
        """Give the transport the node's identity (to sign announces) and its discovery callbacks."""
        if identity.node_id != self.node_id:
            raise ValueError("identity does not match the transport's node id")
        self.identity = identity
        self.announce_addresses = tuple(addresses)
        self.on_peer = on_peer
        self.on_peer_gone = on_peer_gone
        if on_reject is not None:
            self.on_reject = on_reject

    # ---- life cycle ---------------------------------------------------------------------------
    async def start(self, handler: InboundHandler) -> None:
        self._handler = handler
        self._stopping = False
        self._runner = asyncio.ensure_future(self._run())
        try:
            await asyncio.wait_for(self._connected.wait(), self.connect_wait)
        except TimeoutError:
            log.warning("MQTT broker %s:%d not reachable yet; retrying in the background",
                        self.broker.host, self.broker.port)

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None and self.identity is not None and self.connected:
            try:  # a clean stop removes the retained announce (the will is not sent)
                await client.publish(self.announce_topic(self.node_id), b"", qos=1, retain=True, timeout=3.0)
            except (TimeoutError, aiomqtt.MqttError) as e:
                log.info("could not clear the retained announce: %s", e)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._connected.clear()

    def _tls(self) -> ssl.SSLContext | None:
        if not self.broker.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file or None)

    def _will(self) -> aiomqtt.Will | None:
        if self.identity is None:
            return None
        props = Properties(PacketTypes.WILLMESSAGE)
        props.MessageExpiryInterval = TOMBSTONE_EXPIRY_S
        payload = make_record(self.identity, self.network_id, "gone", self.session, (), ())
        self._will_payload = payload
        return aiomqtt.Will(self.announce_topic(self.node_id), payload, qos=1, retain=True, properties=props)

    def _new_session(self) -> None:
        """A fresh session (named in the announce and the will) and an unrelated, random client
        id, per connection: a will captured when one connection died never matches a later one."""
        self.session = os.urandom(16).hex()
        self.client_id = f"gn-{self.node_id}-{os.urandom(8).hex()}"

    def _announce_record(self) -> bytes:
        assert self.identity is not None
        return make_record(self.identity, self.network_id, "up", self.session, self.announce_addresses,
                           tuple(sorted({a.split("://", 1)[0] for a in self.announce_addresses}
                                        & KNOWN_TRANSPORTS)))

    async def _run(self) -> None:
        backoff = self.backoff_initial
        while not self._stopping:
            self._new_session()
            try:
                async with aiomqtt.Client(
                    self.broker.host, self.broker.port, username=self.username, password=self.password,
                    identifier=self.client_id,
                    protocol=aiomqtt.ProtocolVersion.V5, will=self._will(), keepalive=self.keepalive,
                    tls_context=self._tls(), timeout=10.0, max_inflight_messages=64,
                ) as client:
                    await client.subscribe(self.inbox, qos=1)
                    await client.subscribe(f"{self.prefix}/announce/+", qos=1)
                    if self.identity is not None:
                        self._announce_payload = self._announce_record()
                        await client.publish(self.announce_topic(self.node_id), self._announce_payload,
                                             qos=1, retain=True)
                    self._client = client
                    self._connected.set()
                    self.stats["connects"] += 1
                    self.last_connect = time.monotonic()
                    if self.last_disconnect is not None:
                        log.info("reconnected to MQTT broker after %.2f s",
                                 self.last_connect - self.last_disconnect)
                    else:
                        log.info("connected to MQTT broker %s:%d", self.broker.host, self.broker.port)
                    backoff = self.backoff_initial
                    sweeper = asyncio.ensure_future(self._sweep())
                    will_timer = asyncio.ensure_future(self._will_timer(client))
                    reader = asyncio.ensure_future(self._read(client))
                    try:
                        await asyncio.wait({reader, will_timer}, return_when=asyncio.FIRST_COMPLETED)
                        if reader.done():
                            reader.result()        # re-raises the MqttError that ended it
                        else:
                            raise aiomqtt.MqttError("connection lost (socket closed without a disconnect)")
                    finally:
                        for t in (sweeper, will_timer, reader):
                            t.cancel()
                        await asyncio.gather(sweeper, will_timer, reader, return_exceptions=True)
            except aiomqtt.MqttError as e:
                if self._stopping:
                    break
                if self._connected.is_set() or self.last_disconnect is None:
                    log.warning("MQTT connection to %s:%d lost or refused: %s", self.broker.host,
                                self.broker.port, e)
            finally:
                if self._connected.is_set():
                    self.stats["disconnects"] += 1
                    self.last_disconnect = time.monotonic()
                self._connected.clear()
                self._client = None
            if self._stopping:
                break
            # jitter: uniform in [backoff / 2, backoff], so never more than backoff_max (1 s)
            await asyncio.sleep(backoff * (0.5 + 0.5 * random.random()))
            backoff = min(backoff * 2, self.backoff_max)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            try:
                self._on_message(message)
            except Exception:  # a failing callback must not end the connection
                log.exception("error handling an MQTT message on %s", message.topic)

    @staticmethod
    def _socket_dead(client: aiomqtt.Client) -> bool:
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
        last_in = getattr(paho, "_last_msg_in", None)
        return not data or (isinstance(last_in, float) and time.monotonic() - last_in > 1.0)

    async def _will_timer(self, client: aiomqtt.Client) -> None:
        """Counts held wills and returns when the connection's socket is dead (a watchdog)."""
        dead_since: float | None = None
        while True:
            await asyncio.sleep(min(0.25, max(0.01, self.will_grace / 4)))
            now = time.monotonic()
            if self._socket_dead(client):
                dead_since = now if dead_since is None else dead_since
                if now - dead_since >= 0.5:
                    return
                continue
            dead_since = None
            self.check_wills(now)

    def check_wills(self, now: float) -> int:
        """Count the held wills whose grace has run out: `will_grace` seconds after the later of
        the will's arrival and our latest (re)connect, while connected, with no re-announce."""
        if not self._connected.is_set() or not self.held_wills:
            return 0
        since = self.last_connect if self.last_connect is not None else -1e18
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

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.reassembler.timeout / 2))
            if self.reassembler.expire(time.monotonic()):
                log.info("dropped incomplete MQTT frame(s) after %.0f s", self.reassembler.timeout)

    # ---- inbound ------------------------------------------------------------------------------
    def _reject(self, reason: str) -> None:
        self.stats["rejected"] += 1
        self.on_reject(reason)

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        if topic == self.inbox:
            if message.retain:
                return self._reject("retained_frame")
            self._on_chunk(bytes(payload))
        elif topic.startswith(f"{self.prefix}/announce/"):
            self._on_announce(topic.rsplit("/", 1)[1], bytes(payload), bool(message.retain))

    def _on_chunk(self, payload: bytes) -> None:
        self.stats["chunks_in"] += 1
        try:
            c = decode_chunk(payload, self.max_size)
            done = self.reassembler.add(c, time.monotonic())
        except ValueError as e:
            return self._reject(str(e))
        self.stats["duplicates"] = self.reassembler.duplicates
        if done is None:
            return
        self.stats["frames_in"] += 1
        task = asyncio.ensure_future(self._deliver(*done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, frame: bytes, reply_to: str | None) -> None:
        assert self._handler is not None
        async with self._sem:
            try:
                reason = await self._handler(frame, reply_to)
            except Exception:  # the handler should never raise; never let it kill the loop
                log.exception("inbound handler failed")
                return
        if reason is not None:
            log.debug("frame rejected by node: %s", reason)

    def _on_own_announce(self, payload: bytes) -> None:
        """Someone else wrote our announce topic (cleared it, or put an old record there, which an
        anonymous broker client can do without ACLs): publish ours again, at most once a second
        (a write within that second is answered when it ends)."""
        client, mine = self._client, self._announce_payload
        if payload == self._will_payload:
            return   # our own will: the broker is dropping this connection; the reconnect re-announces
        if (client is None or mine is None or payload == mine or self._stopping
                or not self._connected.is_set() or self._restore_pending):
            return
        self._restore_pending = True
        self.stats["announce_restored"] += 1
        log.info("our retained announce was overwritten on the broker; publishing it again")

        async def restore() -> None:
            try:
                await asyncio.sleep(max(0.0, self._last_restore + 1.0 - time.monotonic()))
                self._last_restore = time.monotonic()
                with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
                    await client.publish(self.announce_topic(self.node_id), mine, qos=1, retain=True,
                                         timeout=5.0)
            finally:
                self._restore_pending = False
        task = asyncio.ensure_future(restore())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_announce(self, nid: str, payload: bytes, retained: bool = False) -> None:
        if nid == self.node_id:
            # a retained copy is what the broker held when we subscribed (our previous
            # connection's will); we publish our announce right after, so only live writes count
            return None if retained else self._on_own_announce(payload)
        if not payload:
            return  # a cleared (gracefully stopped) record
        try:
            rec = parse_record(payload, self.network_id, nid)
        except AnnounceError as e:
            log.info("ignoring announce on %s: %s", nid, e)
            return self._reject("bad_announce")
        known = self.peer_sessions.get(rec.public_key)
        if rec.status == "up":
            if known is not None and known[0] != rec.session and rec.ts < known[1]:
                self.stats["stale_announces"] += 1   # an older session's record (replayed)
                return self._reject("stale_announce")
            self.stats["announces"] += 1
            if self.held_wills.pop(rec.public_key, None) is not None:
                self.stats["wills_withdrawn"] += 1   # it re-announced: the broker went away, not it
                log.info("peer %s re-announced; its held MQTT last will is dropped", nid)
            self.peer_sessions[rec.public_key] = (rec.session, rec.ts)
            while len(self.peer_sessions) > 100_000:
                self.peer_sessions.pop(next(iter(self.peer_sessions)))
            self.on_peer(rec.addresses, rec.public_key)
        else:
            # A will counts only for the session the node's latest announce named, and only once:
            # the will of an older session (the node is back), a replayed one, or one for a session
            # this node never saw announced (e.g. a retained tombstone) changes nothing.
            if known is None or known[0] != rec.session or rec.public_key in self.held_wills:
                self.stats["stale_wills"] += 1
                return self._reject("stale_will")
            # Held, not taken: a broker shutdown publishes the wills of live nodes, which then
            # reconnect and re-announce (a new session). check_wills counts it after the grace.
            self.stats["wills_held"] += 1
            self.held_wills[rec.public_key] = (rec.session, nid, time.monotonic())
            while len(self.held_wills) > 100_000:
                self.held_wills.pop(next(iter(self.held_wills)))
            log.info("peer %s: MQTT last will held for %.1f s of connected time", nid, self.will_grace)
            if self.will_grace <= 0:
                self.check_wills(time.monotonic())

    # ---- outbound -----------------------------------------------------------------------------
    def _target(self, address: str) -> str:
        scheme, _, rest = address.partition("://")
        nid = rest.strip("/")
        if scheme != SCHEME or not _HEX16.match(nid):
            raise TransportError(f"not an MQTT node address: {address!r}")
        return nid

    async def send(self, address: str, frame: OutFrame) -> None:
        nid = self._target(address)
        if len(frame) > self.max_size:
            raise TransportError(f"{address}: frame of {len(frame)} bytes exceeds the limit")
        client = self._client
        if client is None or not self._connected.is_set():
            raise TransportError(f"{address}: not connected to the MQTT broker")
        chunks = encode_chunks(as_bytes(frame), self.address, self.chunk_size)
        topic = self.inbox_topic(nid)
        try:
            await asyncio.gather(*[client.publish(topic, c, qos=1, timeout=self.publish_timeout)
                                   for c in chunks])
        except (TimeoutError, aiomqtt.MqttError) as e:
            raise TransportError(f"{address}: MQTT publish failed: {type(e).__name__}: {e}") from e
        self.stats["frames_out"] += 1
        self.stats["chunks_out"] += len(chunks)
