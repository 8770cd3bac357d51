"""MqttTransport against a real Mosquitto: send/receive, chunking, de-duplication, reconnects,
announces and last wills, strict validation of broker-supplied records."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest
from mqtt_broker import mosquitto_fixture  # noqa: F401  (the `mosquitto` fixture)

from gossipnode.transport.base import TransportError
from gossipnode.transport.mqtt import MqttTransport
from gossipnode.wire.announce import AnnounceError, make_record, parse_record
from gossipnode.wire.chunks import Reassembler, decode_chunk, encode_chunks
from gossipnode.wire.identity import Identity

pytestmark = pytest.mark.timeout(60)
NET = "test-net"


class Inbox:
    def __init__(self) -> None:
        self.frames: list[tuple[bytes, str | None]] = []
        self.event = asyncio.Event()

    async def __call__(self, frame: bytes, reply_to: str | None) -> str | None:
        self.frames.append((frame, reply_to))
        self.event.set()
        return None

    async def wait(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frames) < n:
            self.event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.frames)} frames, wanted {n}")
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except TimeoutError:
                pass


async def _pair(broker, **kw):
    ids = [Identity.generate() for _ in range(2)]
    ts = [MqttTransport(broker.url, i.node_id, NET, backoff_initial=0.1, backoff_max=1.0, **kw) for i in ids]
    inboxes = [Inbox(), Inbox()]
    for t, inbox in zip(ts, inboxes, strict=True):
        await t.start(inbox)
        assert t.connected
    return ts, inboxes, ids


async def test_send_receive_and_reply_to(mosquitto) -> None:
    (a, b), (ia, ib), _ = await _pair(mosquitto)
    try:
        await a.send(b.address, b"hello")
        await ib.wait(1)
        assert ib.frames == [(b"hello", a.address)]
        await b.send(a.address, b"")
        await ia.wait(1)
        assert ia.frames == [(b"", b.address)]
        with pytest.raises(TransportError):
            await a.send("http://127.0.0.1:1", b"x")
    finally:
        await a.stop()
        await b.stop()


async def test_chunking_of_a_3mb_frame(mosquitto) -> None:
    (a, b), (_, ib), _ = await _pair(mosquitto)
    try:
        frame = os.urandom(3 * 1024 * 1024 + 17)
        await a.send(b.address, frame)
        await ib.wait(1, timeout=20)
        assert ib.frames[0][0] == frame
        assert a.stats["chunks_out"] == 13 and b.stats["chunks_in"] == 13
        assert b.reassembler.pending_bytes == 0 and not b.reassembler.partials
    finally:
        await a.stop()
        await b.stop()


async def test_chunks_respect_a_broker_packet_limit(tmp_path) -> None:
    from mqtt_broker import Broker, find_mosquitto
    exe = find_mosquitto()
    if exe is None:
        pytest.skip("mosquitto not found")
    broker = Broker(exe, tmp_path, max_packet_size=300 * 1024).start()
    try:
        (a, b), (_, ib), _ = await _pair(broker)
        try:
            frame = os.urandom(1024 * 1024)
            await a.send(b.address, frame)   # 256 KiB chunks fit under a 300 KiB packet limit
            await ib.wait(1, timeout=20)
            assert ib.frames[0][0] == frame
        finally:
            await a.stop()
            await b.stop()
    finally:
        broker.stop()


async def test_duplicate_delivery_is_dropped(mosquitto) -> None:
    (a, b), (_, ib), _ = await _pair(mosquitto)
    try:
        msg_id = os.urandom(16)
        frame = os.urandom(600_000)
        chunks = encode_chunks(frame, a.address, 256 * 1024, msg_id)
        topic = a.inbox_topic(b.node_id)
        assert a._client is not None
        # every chunk twice, out of order: what QoS 1 redelivery can look like
        for c in [chunks[1], chunks[0], chunks[1], chunks[2], chunks[0], chunks[2]]:
            await a._client.publish(topic, c, qos=1)
        for c in encode_chunks(b"small", a.address, 1024, b"\x01" * 16) * 3:
            await a._client.publish(topic, c, qos=1)
        await ib.wait(2)
        await asyncio.sleep(0.5)
        assert [f for f, _ in ib.frames] == [frame, b"small"]
        assert b.stats["duplicates"] == 2 + 1 + 2  # two dup chunks, one after completion, two smalls
    finally:
        await a.stop()
        await b.stop()


async def test_send_while_disconnected_raises_then_reconnects(mosquitto) -> None:
    (a, b), (_, ib), _ = await _pair(mosquitto)
    try:
        mosquitto.stop()
        t0 = time.monotonic()
        while a.connected or b.connected:
            assert time.monotonic() - t0 < 20, "disconnect not noticed"
            await asyncio.sleep(0.05)
        with pytest.raises(TransportError):
            await a.send(b.address, b"while down")
        await asyncio.sleep(1.0)
        mosquitto.start()
        t1 = time.monotonic()
        assert await a.wait_connected(15) and await b.wait_connected(15)
        reconnect_s = time.monotonic() - t1
        print(f"reconnected {reconnect_s:.2f} s after the broker came back")
        assert reconnect_s < 5.0
        await a.send(b.address, b"after restart")
        await ib.wait(1)
        assert ib.frames[-1][0] == b"after restart"
        assert a.stats["connects"] == 2 and a.stats["disconnects"] == 1
    finally:
        await a.stop()
        await b.stop()


CRASHER = """
import asyncio, sys
from gossipnode.transport.mqtt import MqttTransport
from gossipnode.wire.identity import Identity
async def main():
    ident = Identity.from_seed(bytes.fromhex(sys.argv[2]))
    t = MqttTransport(sys.argv[1], ident.node_id, sys.argv[3])
    t.bind(ident, (t.address,), lambda *a: None, lambda pk: None)
    async def h(frame, reply_to): return None
    await t.start(h)
    print("up", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


async def test_announce_discovery_will_and_clean_stop(mosquitto) -> None:
    ida, idb = Identity.generate(), Identity.generate()
    seed_c = os.urandom(32)
    idc = Identity.from_seed(seed_c)
    seen: dict[str, list] = {"peer": [], "gone": []}
    a = MqttTransport(mosquitto.url, ida.node_id, NET, will_grace=1.0)
    a.bind(ida, ("http://127.0.0.1:9", a.address), lambda addrs, pk: seen["peer"].append((addrs, pk)),
           lambda pk: seen["gone"].append(pk))
    b = MqttTransport(mosquitto.url, idb.node_id, NET)
    b.bind(idb, (b.address,), lambda *x: None, lambda pk: None)
    await b.start(Inbox())             # b announces first: a finds it as a retained record
    await a.start(Inbox())
    crasher = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", CRASHER, mosquitto.url, seed_c.hex(), NET], stdout=subprocess.PIPE)
    try:
        assert crasher.stdout is not None and crasher.stdout.readline().strip() == b"up"
        for _ in range(100):
            if {pk for _, pk in seen["peer"]} >= {idb.public_key, idc.public_key}:
                break
            await asyncio.sleep(0.05)
        assert ((b.address,), idb.public_key) in seen["peer"]
        assert ((f"mqtt://{idc.node_id}",), idc.public_key) in seen["peer"]
        # a clean stop clears the retained record and sends no will
        await b.stop()
        # SIGKILL: the socket closes without DISCONNECT, so the broker publishes c's will
        crasher.kill()
        crasher.wait(10)
        t0 = time.monotonic()
        while not seen["gone"] and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.02)
        print(f"last will counted {time.monotonic() - t0:.2f} s after SIGKILL (grace 1 s)")
        assert seen["gone"] == [idc.public_key]
        # a late joiner sees neither b (cleared) nor c (tombstone "gone") as a live peer
        late: list = []
        idd = Identity.generate()
        d = MqttTransport(mosquitto.url, idd.node_id, NET)
        d.bind(idd, (d.address,), lambda addrs, pk: late.append(pk), lambda pk: None)
        await d.start(Inbox())
        await asyncio.sleep(0.5)
        assert late == [ida.public_key]
        await d.stop()
    finally:
        if crasher.poll() is None:
            crasher.kill()
            crasher.wait()
        await a.stop()
        await b.stop()


def test_records_are_validated_strictly() -> None:
    ident = Identity.generate()
    good = make_record(ident, NET, "up", "ab" * 16, (f"mqtt://{ident.node_id}",), ("mqtt",))
    rec = parse_record(good, NET, ident.node_id)
    assert rec.public_key == ident.public_key and rec.status == "up"
    with pytest.raises(AnnounceError):
        parse_record(good, "other-net", ident.node_id)              # signature binds the network
    with pytest.raises(AnnounceError):
        parse_record(good, NET, "0" * 16)                           # topic must match
    d = json.loads(good)
    d["addresses"] = ["http://evil:1", f"mqtt://{ident.node_id}"]
    with pytest.raises(AnnounceError):
        parse_record(json.dumps(d).encode(), NET, ident.node_id)    # tampered: signature fails
    for bad in (b"", b"[]", b"{" * 5000, b"\xff\xfe", json.dumps(d | {"x": 1}).encode()):
        with pytest.raises(AnnounceError):
            parse_record(bad, NET, ident.node_id)
    other = Identity.generate()
    forged = make_record(other, NET, "up", "ab" * 16, (f"mqtt://{other.node_id}",), ("mqtt",))
    with pytest.raises(AnnounceError):
        parse_record(forged, NET, ident.node_id)                    # another key under my topic


def test_chunk_validation_and_bounded_reassembly() -> None:
    single = encode_chunks(b"x" * 500, "", 1024)[0]
    for bad in (b"", b"XXXX" + bytes(40), single[:-1], single + b"!"):
        with pytest.raises(ValueError):
            decode_chunk(bad, 1 << 20)
    with pytest.raises(ValueError, match="too_large"):
        decode_chunk(encode_chunks(b"x" * 5000, "", 1024)[0], 4000)
    r = Reassembler(max_size=1 << 20, max_pending_bytes=3000, timeout=5.0)
    chunks = encode_chunks(b"y" * 5000, "", 1024)
    r.add(decode_chunk(chunks[0], 1 << 20), 0.0)
    r.add(decode_chunk(chunks[1], 1 << 20), 0.0)
    with pytest.raises(ValueError, match="reassembly_overflow"):
        r.add(decode_chunk(chunks[2], 1 << 20), 0.0)
    assert r.pending_bytes == 0
    r2 = Reassembler(max_size=1 << 20, max_pending_bytes=1 << 20, timeout=5.0)
    r2.add(decode_chunk(chunks[0], 1 << 20), 0.0)
    assert r2.expire(10.0) == 1 and r2.pending_bytes == 0
    assert r2.add(decode_chunk(chunks[1], 1 << 20), 11.0) is None   # late chunk of a dropped frame
    assert not r2.partials
