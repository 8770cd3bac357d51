"""HTTP at socket speed (issue 12.2): a Frame travels as its parts (never joined), the receiver
hashes its segments as the body arrives, and decode takes those digests. Real loopback sockets."""
from __future__ import annotations

import msgpack
import numpy as np
from aiohttp import web

from gossipnode.core.messages import ModelData
from gossipnode.transport.http import HttpTransport, Runner
from gossipnode.wire import Identity, ReplayGuard, decode, model_hash, to_raw
from gossipnode.wire.codec import Frame, ReceiveBuffer, encode_frame

from conftest import free_ports

ALICE = Identity.from_seed(b"\x09" * 32)


async def _pair(handler):  # type: ignore[no-untyped-def]
    (port,) = free_ports(1)
    app = web.Application()
    server = HttpTransport(app, f"http://127.0.0.1:{port}", 1 << 26, timeout=5.0)
    await server.start(handler)
    runner = Runner(app, server)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = HttpTransport(web.Application(), "http://127.0.0.1:1", 1 << 26, timeout=5.0)
    await client.start(handler)
    return server, client, runner, f"http://127.0.0.1:{port}"


async def test_frame_parts_arrive_hashed_and_decode_without_rehashing() -> None:
    rng = np.random.default_rng(3)
    ts = (to_raw("w", rng.standard_normal((512, 1024), dtype=np.float32)),   # 2 MiB: a populated map
          to_raw("b", np.arange(7, dtype=np.float32)),
          to_raw("v", rng.standard_normal(300_000, dtype=np.float32)))
    msg = ModelData(model_hash(ts), ts)
    frame = encode_frame(ALICE, "t", 1, 0.0, msg)
    assert isinstance(frame, Frame) and any(p is ts[0].data for p in frame.parts)
    seen = []

    async def handler(buf, _reply):  # type: ignore[no-untyped-def]
        assert type(buf) is ReceiveBuffer and len(buf) == len(frame)
        seen.append(dict(buf.hashed or {}))
        env = decode(buf, "t", 1 << 26, ReplayGuard())
        assert env.msg == msg
        big = [t for t in env.msg.tensors if len(t.data) >= 4096]
        assert len(big) == 2 and all(t.digest is not None for t in big)   # from the stream
        return None if model_hash(env.msg.tensors) == msg.model else "hash_mismatch"

    server, client, runner, url = await _pair(handler)
    try:
        await client.send(url, frame)          # scatter-gather parts
        await client.send(url, bytes(encode_frame(ALICE, "t", 2, 0.0, msg)))   # plain bytes too
    finally:
        await client.stop()
        await server.stop()
        await runner.cleanup()
    segments = len(msgpack.unpackb(bytes(frame))[6]) + 1
    assert segments == 4 and len(seen) == 2 and all(len(s) == segments for s in seen)   # all hashed on arrival
    assert server.stats.get("slow_closed", 0) == 0
