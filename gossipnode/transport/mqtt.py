"""MQTT transport: frames travel through a broker (e.g. Mosquitto) via per-node inbox topics.

Topics, payloads and rules are protocol/SPEC.md section 14 ("MQTT binding"). A node's MQTT
address ``mqtt://<node_id>`` names its inbox ``gossipnode/<network>/inbox/<node_id>`` on the
broker the receiver is configured with (``--broker``): frames travel there as QoS 1 chunks
(wire.chunks), reassembled with bounded memory and de-duplicated by message id. Its retained,
signed announce record is on ``gossipnode/<network>/announce/<node_id>``; the MQTT last will
replaces it with a signed ``"gone"`` record when the connection dies without a clean stop, and
a clean stop clears it (wire.announce builds and checks the records; mqtt_peers applies them).

Every connection gets a fresh random session id (named in that connection's announce and will)
and a fresh random client id that is not derived from anything public, so another broker client
can neither take the connection over (MQTT drops the older of two connections with one client
id) nor make an old or replayed will count. Broker ACLs (deploy/mosquitto-acl.conf) are the real
defence on MQTT. Reconnect back-off is capped at 1 s.

May import: aiomqtt/paho, the standard library, wire/ and transport/ (never config or the node).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..wire.announce import HEX16, AnnounceError, parse_record
from ..wire.chunks import DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE, Reassembler, decode_chunk, encode_chunks
from .base import InboundHandler, OutFrame, TransportError, TransportOptions, as_bytes
from .mqtt_peers import WILL_GRACE_S, BrokerUrl, GoneCallback, OwnRecords, PeerCallback, PeerTracker, drop_socket
from .mqtt_peers import socket_dead, topic_safe

if TYPE_CHECKING:
    from ..wire.identity import Identity

log = logging.getLogger(__name__)

SCHEME = "mqtt"
TOPIC_ROOT = "gossipnode"
TOMBSTONE_EXPIRY_S = 600          # a crashed node's retained "gone" record expires after this


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
        if not HEX16.match(node_id):
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
        self.prefix = f"{TOPIC_ROOT}/{self.network_id}"
        self.inbox = self.inbox_topic(node_id)
        self.reassembler = Reassembler(max_size, max(max_pending_bytes, 2 * chunk_size), reassembly_timeout)
        # both fresh for every connection (_new_session); neither is derivable from the other
        self.session = os.urandom(16).hex()
        self.client_id = f"gn-{node_id}-{os.urandom(8).hex()}"
        # set by bind() (the node); without them the transport still moves frames
        self.identity: Identity | None = None
        self.announce_addresses: tuple[str, ...] = (self.address,)
        self.on_reject: Callable[[str], Any] = lambda reason: None
        self.stats = {"connects": 0, "disconnects": 0, "frames_in": 0, "frames_out": 0,
                      "chunks_in": 0, "chunks_out": 0, "duplicates": 0, "rejected": 0,
                      "announces": 0, "wills": 0, "stale_wills": 0, "stale_announces": 0,
                      "announce_restored": 0, "wills_held": 0, "wills_withdrawn": 0}
        self.peers = PeerTracker(will_grace, self.stats, self._reject)
        self.own = OwnRecords()
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
    def from_options(cls, o: TransportOptions) -> MqttTransport:
        return cls(o.broker, o.node_id, o.network_id, username=o.mqtt_username,
                   password=o.mqtt_password, ca_file=o.mqtt_ca, max_size=o.max_size)

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
        self.peers.on_peer = on_peer
        self.peers.on_peer_gone = on_peer_gone
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
        payload = self.own.new_will(self.identity, self.network_id, self.session)
        return aiomqtt.Will(self.announce_topic(self.node_id), payload, qos=1, retain=True, properties=props)

    def _new_session(self) -> None:
        """A fresh session (named in the announce and the will) and an unrelated, random client
        id, per connection: a will captured when one connection died never matches a later one."""
        self.session = os.urandom(16).hex()
        self.client_id = f"gn-{self.node_id}-{os.urandom(8).hex()}"

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
                        mine = self.own.new_announce(self.identity, self.network_id, self.session,
                                                     self.announce_addresses)
                        await client.publish(self.announce_topic(self.node_id), mine, qos=1, retain=True)
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

    async def _will_timer(self, client: aiomqtt.Client) -> None:
        """Counts held wills and returns when the connection's socket is dead (a watchdog)."""
        dead_since: float | None = None
        tick = min(0.25, max(0.01, self.peers.will_grace / 4))
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now, stalled = time.monotonic(), time.monotonic() - last > 4 * tick
            last = now
            if socket_dead(client):
                dead_since = now if dead_since is None else dead_since
                if now - dead_since >= 0.5:
                    drop_socket(client)
                    return
                continue
            dead_since = None
            # after a stall of our loop, re-announces may still sit unread: let the reader run first
            if not stalled:
                self.check_wills(now)

    def check_wills(self, now: float) -> int:
        """Count the held wills whose grace has run out (PeerTracker.check) while connected."""
        return self.peers.check(now, self._connected.is_set(), self.last_connect)

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
        anonymous broker client can do without ACLs): publish ours again (OwnRecords says when)."""
        client, mine = self._client, self.own.announce
        if (client is None or mine is None or self._stopping or not self._connected.is_set()
                or not self.own.should_restore(payload)):
            return
        self.stats["announce_restored"] += 1
        log.info("our retained announce was overwritten on the broker; publishing it again")

        async def restore() -> None:
            try:
                await asyncio.sleep(self.own.restore_delay(time.monotonic()))
                self.own.last_restore = time.monotonic()
                with contextlib.suppress(TimeoutError, aiomqtt.MqttError):
                    await client.publish(self.announce_topic(self.node_id), mine, qos=1, retain=True,
                                         timeout=5.0)
            finally:
                self.own.restore_pending = False
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
        if self.peers.record(rec, time.monotonic()) and self.peers.will_grace <= 0:
            self.check_wills(time.monotonic())

    # ---- outbound -----------------------------------------------------------------------------
    def _target(self, address: str) -> str:
        scheme, _, rest = address.partition("://")
        nid = rest.strip("/")
        if scheme != SCHEME or not HEX16.match(nid):
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
