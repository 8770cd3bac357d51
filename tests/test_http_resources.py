"""Bounded resources and no reflection over real HTTP (issue 9, items 5 and 6): the inbound
budget (503 + Retry-After), 411/413, idle and slow connections closed, malformed HTTP without a
traceback, replies only to the requester's own signed address, MODEL_REQUEST rate limit, and
the bound on frames waiting for a base. Real sockets on 127.0.0.1, each test a few seconds."""
from __future__ import annotations

import asyncio
import logging
import os
import time

import aiohttp
import pytest
from aiohttp import web

from gossipnode.runtime.config import NodeConfig
from gossipnode.core.messages import (
    Advertise, ModelKind, ModelMsg, ModelRequest, Ping, Pong, Status, ViewRecord,
)
from gossipnode.runtime.exchange import MODEL_REQUEST_BURST, PENDING_BASE_FRAMES
from gossipnode.runtime.node import Node
from gossipnode.transport.http import REPLY_TO
from gossipnode.wire.codec import decode, encode
from gossipnode.wire.identity import Identity
from gossipnode.wire.records import Ed25519RecordAuth

from conftest import free_ports, until

MIB = 1 << 20
TIMEOUT = 1.0  # --http-timeout in these tests


@pytest.fixture
async def node(tmp_path):
    (port,) = free_ports(1)
    cfg = NodeConfig(port=port, state_dir=str(tmp_path / "n"), mnist1d_samples=1000, network_id="t",
                     bootstrap_wait=600, bootstrap_timeout=600, max_message_mb=4.0, inbound_budget_mb=4.0,
                     http_timeout=TIMEOUT, ping_timeout=0.5)
    n = Node(cfg)
    await n.start()
    yield n
    await n.stop(graceful=False)


class Listener:
    """A plain HTTP server on loopback that records every frame POSTed to it."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        (self.port,) = free_ports(1)
        self.url = f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> Listener:
        app = web.Application()

        async def rec(request: web.Request) -> web.Response:
            self.frames.append(await request.read())
            return web.Response(status=202)

        app.router.add_post("/v1/messages", rec)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    def types(self) -> list[str]:
        return [type(decode(f, "t", 1 << 30).msg).__name__ for f in self.frames]


async def _post(n: Node, body: bytes, headers: dict | None = None, **kw) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(n.cfg.address + "/v1/messages", data=body, headers=headers, **kw) as r:
            return r.status, (await r.json() if r.status != 202 else {}), dict(r.headers)


async def _raw(n: Node, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", n.cfg.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closes the connection (fails if it does not in time)."""
    t0 = time.monotonic()
    async with asyncio.timeout(seconds):
        while await reader.read(65536):
            pass
    return time.monotonic() - t0


async def _join(n: Node, peer: Identity, address: str, seq: int = 1) -> int:
    """`peer` joins `n` with its own signed address: a signed JOIN advert, then the PONG to n's
    probe ping (a joiner enters the view only once reached; SPEC 4.1). The highest HTTP status."""
    rec = Ed25519RecordAuth(peer, "t").sign(ViewRecord(peer.public_key, 0, 1, Status.JOIN, (address,)))
    status = (await _post(n, encode(peer, "t", seq, time.time(), Advertise.of(rec))))[0]
    j = n.core.pending.get(peer.public_key)
    if j is not None:
        status = max(status, (await _post(n, encode(peer, "t", 0, time.time(), Pong(0, j.nonce, rec))))[0])
    assert peer.public_key in n.core.view
    return status


async def test_budget_busy_503_with_retry_after_and_limits(node: Node) -> None:
    # One 3 MiB body held half-sent fills most of the 4 MiB budget ...
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: {3 * MIB}\r\n\r\n").encode()
    reader, writer = await _raw(node, head + b"\0" * 1000)
    await until(lambda: node.http.budget.used, 1.0, "the half-sent body's budget taken")
    assert node.http.budget.used == 3 * MIB
    # ... so a second big one is refused before its body is read, with and without 100-continue.
    for expect in (False, True):
        status, body, headers = await _post(node, b"\0" * (2 * MIB), expect100=expect)
        assert status == 503 and body == {"rejected": "busy"} and int(headers["Retry-After"]) >= 1
    # Small frames (a PING) have a reserve: control traffic goes on while big models arrive.
    ping = encode(Identity.generate(), "t", 1, time.time(), Ping(1, 1))
    assert (await _post(node, ping))[0] == 202
    # Over the size limit: 413 from the header alone; chunked (no length): 411.
    assert (await _post(node, b"\0" * (5 * MIB)))[:2] == (413, {"rejected": "too_large"})

    async def chunks():
        yield b"\0" * 100

    assert (await _post(node, chunks()))[:2] == (411, {"rejected": "length_required"})
    st = node.status()
    assert st["messages_rejected"]["busy"] == 2 and st["http"]["busy"] == 2
    assert st["messages_rejected"]["length_required"] == 1 and st["messages_rejected"]["too_large"] == 1
    # The half-sent body is a slow one: closed at its deadline, and its budget is given back.
    await _closed_within(reader, node.http.body_deadline(3 * MIB) + 2)
    writer.close()
    await until(lambda: node.http.budget.used == 0, 2.0, "the budget given back")
    assert node.status()["http"]["slow_closed"] == 1


async def test_idle_and_half_sent_headers_closed_after_keepalive_timeout(node: Node) -> None:
    r1, w1 = await _raw(node, b"")                                      # never sends a byte
    r2, w2 = await _raw(node, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")  # headers never end
    assert await _closed_within(r1, TIMEOUT + 3) >= TIMEOUT * 0.8
    await _closed_within(r2, 3)
    # A keep-alive connection idle after one request is closed too.
    ping = encode(Identity.generate(), "t", 1, time.time(), Ping(1, 1))
    r3, w3 = await _raw(node, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: "
                        + str(len(ping)).encode() + b"\r\n\r\n" + ping)
    assert (await r3.readline()).startswith(b"HTTP/1.1 202")
    await _closed_within(r3, TIMEOUT + 3)
    for w in (w1, w2, w3):
        w.close()
    assert node.status()["http"]["idle_closed"] >= 3


async def test_slowloris_body_closed_and_counted(node: Node) -> None:
    reader, writer = await _raw(node, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    t0 = time.monotonic()
    limit = node.http.body_deadline(1000)
    while not node.status()["http"].get("slow_closed"):  # dripping bytes does not keep it open
        assert time.monotonic() - t0 < limit + 2, "slow body not closed"
        try:
            writer.write(b"\0")
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.1)
    assert limit * 0.8 < time.monotonic() - t0 < limit + 2
    await _closed_within(reader, 2)
    writer.close()
    st = node.status()
    assert st["http"]["slow_closed"] == 1 and st["messages_rejected"]["slow_body"] == 1
    assert node.http.budget.used == 0


async def test_malformed_http_logs_no_traceback(node: Node, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    bad = [b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
           b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
           b"POST /v1/messages HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"]
    for req in bad:
        reader, writer = await _raw(node, req)
        assert b" 400 " in await reader.readline()
        writer.close()
    assert node.status()["http"]["bad_requests"] == len(bad)
    server = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert not [r for r in server if r.exc_info or r.levelno >= logging.WARNING], server
    # the node still answers
    assert (await _post(node, encode(Identity.generate(), "t", 1, time.time(), Ping(1, 1))))[0] == 202


async def test_no_reflection_to_reply_to_header(node: Node) -> None:
    async with Listener() as victim, Listener() as own:
        hdr = {REPLY_TO: victim.url}
        h = node.current
        # A stranger (not in the view): a MODEL_REQUEST is refused, a PING goes unanswered.
        stranger = Identity.generate()
        status, body, _ = await _post(node, encode(stranger, "t", 1, time.time(), ModelRequest(h)), hdr)
        assert status == 400 and body == {"rejected": "not_member"}
        assert (await _post(node, encode(stranger, "t", 2, time.time(), Ping(1, 1)), hdr))[0] == 202
        # A member: the answer goes to the address of its own record, never to the header's.
        member = Identity.generate()
        assert await _join(node, member, own.url) == 202
        assert (await _post(node, encode(member, "t", 2, time.time(), ModelRequest(h)), hdr))[0] == 202
        await until(lambda: "ModelData" in own.types(), 2.5, "the MODEL_DATA at the member's own address")
        assert victim.frames == []
        assert node.status()["messages_rejected"]["not_member"] == 1


async def test_model_request_rate_limited_per_peer(node: Node) -> None:
    async with Listener() as own:
        member = Identity.generate()
        assert await _join(node, member, own.url) == 202
        answers = []
        for i in range(MODEL_REQUEST_BURST + 3):
            status, body, headers = await _post(node, encode(member, "t", 10 + i, time.time(),
                                                             ModelRequest(node.current)))
            answers.append(status)
        assert answers[:MODEL_REQUEST_BURST] == [202] * MODEL_REQUEST_BURST
        assert set(answers[MODEL_REQUEST_BURST:]) == {429} and "Retry-After" in headers
        assert node.status()["messages_rejected"]["rate_limited"] == len(answers) - MODEL_REQUEST_BURST
        await until(lambda: own.types().count("ModelData") == MODEL_REQUEST_BURST, 2.5, "one answer per token")
        assert own.types().count("ModelData") == MODEL_REQUEST_BURST
        # Another member has its own bucket.
        other = Identity.generate()
        assert await _join(node, other, own.url) == 202
        assert (await _post(node, encode(other, "t", 5, time.time(), ModelRequest(node.current))))[0] == 202


async def test_frames_waiting_for_a_base_are_bounded(node: Node) -> None:
    async with Listener() as own:  # the member never answers the MODEL_REQUESTs for the bases
        member = Identity.generate()
        assert await _join(node, member, own.url) == 202
        model = node.learner.initial
        t0 = time.monotonic()
        codes = []
        for i in range(PENDING_BASE_FRAMES + 2):
            msg = ModelMsg(1, ModelKind.TRAINED, os.urandom(32), (), os.urandom(32), model)
            codes.append((await _post(node, encode(member, "t", 10 + i, time.time(), msg)))[0])
        assert codes == [202] * PENDING_BASE_FRAMES + [503, 503]
        assert node.status()["http"]["pending_base_frames"] == PENDING_BASE_FRAMES
        # The wait is bounded (2 x ping timeout + transfer time), then each is missing_base.
        await until(lambda: not node.status()["http"]["pending_base_frames"], 10, "the held frames released")
        st = node.status()
        assert st["http"]["pending_base_frames"] == 0 and st["http"]["pending_base_bytes"] == 0
        assert st["messages_rejected"]["missing_base"] == PENDING_BASE_FRAMES
        assert st["messages_rejected"]["busy"] == 2
        assert time.monotonic() - t0 < 2 * node.cfg.ping_timeout + 4


async def test_sender_retries_503_after_retry_after_until_its_deadline() -> None:
    from gossipnode.transport.base import TransportError
    from gossipnode.transport.http import HttpTransport

    answers: list[int] = []
    (port,) = free_ports(1)
    app = web.Application()

    async def busy_then_ok(request: web.Request) -> web.Response:
        await request.read()
        answers.append(503 if len(answers) < 2 or request.headers.get("X-Always") else 202)
        return web.Response(status=answers[-1], headers={"Retry-After": "0.2"})

    app.router.add_post("/v1/messages", busy_then_ok)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    t = HttpTransport(web.Application(), "http://127.0.0.1:1", 1 << 20, timeout=1.0)

    async def h(frame, reply_to):
        return None

    await t.start(h)
    try:
        await t.send(f"http://127.0.0.1:{port}", b"x" * 100)
        assert answers == [503, 503, 202]
        t._session.headers["X-Always"] = "1"  # from now on always busy: gives up at the deadline
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="503"):
            await t.send(f"http://127.0.0.1:{port}", b"x" * 100)
        assert time.monotonic() - t0 < t.client_timeout(100).total + 1
    finally:
        await t.stop()
        await runner.cleanup()
