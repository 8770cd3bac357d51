"""HTTP client side of issue 14: outbound connections leave from --host, a small frame to a
peer behind a cut (a connection that never answers) fails after the answer time-out, not 2T."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from conftest import free_ports
from fault_proxy import FaultProxy
from gossipnode.transport.base import Refused, TransportError
from gossipnode.transport.http import HttpTransport, _local_addr


async def _noop(frame, reply_to):
    return None


def test_local_addr_only_for_a_specific_ip() -> None:
    assert _local_addr("127.0.0.7") == ("127.0.0.7", 0)
    assert _local_addr("::1") == ("::1", 0)
    assert _local_addr("0.0.0.0") is None and _local_addr("::") is None
    assert _local_addr("localhost") is None and _local_addr(None) is None


async def test_outbound_leaves_from_the_host_and_a_cut_costs_the_answer_timeout() -> None:
    seen: list[str] = []
    app = web.Application()

    async def receive(request: web.Request) -> web.Response:
        seen.append(request.remote)
        await request.read()
        return web.Response(status=202)

    async def reject(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"rejected": "not_member"}, status=400)

    app.router.add_post("/v1/messages", receive)
    app.router.add_post("/no/v1/messages", reject)
    port, proxy_port = free_ports(2)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.61", port).start()
    proxy = FaultProxy("127.0.0.61", proxy_port, port)
    await proxy.start()
    t = HttpTransport(web.Application(), "http://127.0.0.62:1", 1 << 20, timeout=15.0,
                      local_host="127.0.0.62", answer_timeout=1.0)
    await t.start(_noop)
    try:
        await t.send(f"http://127.0.0.61:{port}", b"x" * 100)
        await t.send(f"http://127.0.0.61:{proxy_port}", b"x" * 100)
        assert seen[0] == "127.0.0.62" and len(seen) == 2   # (the proxy connects from where the OS picks)
        with pytest.raises(Refused):                     # an answer: the peer is reachable
            await t.send(f"http://127.0.0.61:{port}/no", b"x" * 100)
        proxy.blocked = frozenset({"127.0.0.62"})        # the cut: bytes vanish, connections hang
        t0 = time.monotonic()
        with pytest.raises(TransportError) as e:
            await t.send(f"http://127.0.0.61:{proxy_port}", b"x" * 100)
        assert not isinstance(e.value, Refused)
        assert time.monotonic() - t0 < 5.0              # 1 s answer time-out, not 2 x 15 s
        assert proxy.dropped > 0
    finally:
        await t.stop()
        await proxy.stop()
        await runner.cleanup()
        await asyncio.sleep(0)
