"""Outbound keep-alive (found by tests/test_crosscheck.py): a connection left idle for the peer's
whole server-side idle time-out races the server closing it, and the send fails (server
disconnected, connection reset) although the peer is fine; the node then takes the peer for
out of reach and skips it in walks. So the client reuses a connection only for half that time."""
from __future__ import annotations

import asyncio

from aiohttp import web

from gossipnode.core.messages import Ping
from gossipnode.transport.http import HttpTransport, Runner
from gossipnode.wire import Identity
from gossipnode.wire.codec import encode_frame

from conftest import free_ports

T = 1.0   # both sides' --http-timeout
ME = Identity.from_seed(b"\x05" * 32)


async def test_an_idle_connection_is_not_reused_near_the_servers_idle_timeout() -> None:
    peers: list[tuple[str, int]] = []

    @web.middleware
    async def source(request: web.Request, handler):  # type: ignore[no-untyped-def]
        peers.append(request.transport.get_extra_info("peername"))
        return await handler(request)

    async def handler(_buf, _reply):  # type: ignore[no-untyped-def]
        return None

    (port,) = free_ports(1)
    app = web.Application(middlewares=[source])
    server = HttpTransport(app, f"http://127.0.0.1:{port}", 1 << 20, timeout=T)
    await server.start(handler)
    runner = Runner(app, server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = HttpTransport(web.Application(), "http://127.0.0.1:1", 1 << 20, timeout=T)
    await client.start(handler)
    url = f"http://127.0.0.1:{port}"
    try:
        for seq, idle in enumerate((0.0, 0.0, 0.75 * T), start=1):
            await asyncio.sleep(idle)
            await client.send(url, bytes(encode_frame(ME, "t", seq, 0.0, Ping(0, seq, None))))
    finally:
        await client.stop()
        await server.stop()
        await runner.cleanup()
    assert len(peers) == 3
    assert peers[1] == peers[0]   # reused at once
    assert peers[2] != peers[1]   # not after 3/4 of the server's idle time-out: a new connection
