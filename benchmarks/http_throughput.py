"""HTTP at socket speed: a ~100 MB MODEL delivered over loopback HTTP, end to end, against raw
aiohttp streaming of the same bytes, measured side by side in each repetition.

* project, end to end: encode_frame (scatter-gather parts) -> HttpTransport.send (a payload
  that writes the parts without joining them) -> the node's HTTP receive path (one buffer
  sized from Content-Length under the inbound budget, hashed as the chunks arrive) -> decode
  (verify, strict read, tensors as views) -> model_hash of the received model (no second pass);
* project, transport only: the same with an already-encoded frame and a handler that only
  takes the buffer (no decode);
* baseline, raw aiohttp: ClientSession.post(data=bytes), with and without Expect: 100-continue
  (the faster of the two, by CPU time, in each repetition), to a bare aiohttp handler that streams
  the body into a bytearray sized from Content-Length (readany + copy), then answers 202.

Client and server share one uvloop event loop in this process (the machine has 2 cores shared
with other work: CPU time is printed next to wall time and is the steadier figure). The goal
is a throughput ratio raw / project >= 0.8 end to end.

    .venv/bin/python benchmarks/http_throughput.py [--mb 100] [--repeat 3]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import numpy as np
from aiohttp import web

from gossipnode.core.messages import ModelKind, ModelMsg, RawTensor, Status, ViewRecord
from gossipnode.transport.http import HttpTransport, Runner
from gossipnode.wire import Identity, ReplayGuard, decode, model_hash, to_raw
from gossipnode.wire.codec import encode_frame

GOAL = 0.8


def build_tensors(total_mb: float, rng: np.random.Generator) -> tuple[RawTensor, ...]:
    n_big, cols = 4, 1024
    per = int(total_mb * 1e6 / 4 / n_big)
    out = []
    for i in range(n_big):
        out.append(to_raw(f"layer{i}.weight", rng.standard_normal((per // cols, cols), dtype=np.float32)))
        out.append(to_raw(f"layer{i}.bias", rng.standard_normal(cols, dtype=np.float32)))
    return tuple(out)


def stats(xs: list[float]) -> str:
    return f"{min(xs):7.3f} {statistics.median(xs):7.3f} {max(xs):7.3f}"


async def start_app(app: web.Application, transport: HttpTransport | None = None) -> tuple[web.AppRunner, int]:
    """Serve app on a free loopback port; returns the runner and the port."""
    runner = Runner(app, transport) if transport is not None else web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def run(args: argparse.Namespace) -> None:
    ident = Identity.from_seed(b"\x01" * 32)
    rng = np.random.default_rng(0)
    tensors = build_tensors(args.mb, rng)
    view = tuple(ViewRecord(rng.bytes(32), 7, i, Status.JOIN, (), rng.bytes(64)) for i in range(100))
    max_size = int(args.mb * 1e6) + (8 << 20)

    # raw aiohttp server
    raw_app = web.Application(client_max_size=max_size)

    async def raw_receive(request: web.Request) -> web.Response:
        n = request.content_length or 0
        buf = bytearray(n)
        view_ = memoryview(buf)
        pos = 0
        while pos < n:
            chunk = await request.content.readany()
            if not chunk:
                break
            view_[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
        view_.release()
        return web.Response(status=202 if pos == n else 400)

    raw_app.router.add_post("/v1/messages", raw_receive)
    raw_runner, raw_port = await start_app(raw_app)

    # the project's server: the node's HttpTransport receive path
    app = web.Application(client_max_size=max_size)
    server = HttpTransport(app, "http://127.0.0.1:0", max_size=max_size, timeout=30.0)
    mode = {"decode": True}

    async def handler(frame: bytearray, _reply: str | None) -> str | None:
        if not mode["decode"]:
            return None
        env = await asyncio.to_thread(decode, frame, "bench", max_size, ReplayGuard())   # as node.py (> 4 MiB)
        h = await asyncio.to_thread(model_hash, env.msg.tensors)
        return None if h == env.msg.model else "hash_mismatch"

    await server.start(handler)
    runner, port = await start_app(app, server)
    client = HttpTransport(web.Application(), "http://127.0.0.1:1", max_size=max_size, timeout=30.0)
    await client.start(lambda f, r: None)  # type: ignore[arg-type,return-value]
    session = aiohttp.ClientSession()

    def new_msg() -> ModelMsg:
        ts = tuple(RawTensor(t.name, t.dtype, t.shape, t.data) for t in tensors)   # no cached digests
        return ModelMsg(7, ModelKind.TRAINED, model_hash(ts), view, None, ts, ())

    pre = encode_frame(ident, "bench", 1, 0.0, new_msg())
    raw_bytes = bytes(pre)
    size = len(raw_bytes)

    async def raw_post(expect100: bool) -> None:
        async with session.post(f"http://127.0.0.1:{raw_port}/v1/messages", data=raw_bytes, expect100=expect100,
                                headers={"Content-Type": "application/octet-stream"}) as r:
            assert r.status == 202, r.status

    async def raw_plain() -> None:
        await raw_post(False)

    async def raw_expect() -> None:
        await raw_post(True)

    seq = [10]

    async def project_e2e() -> None:
        mode["decode"] = True
        seq[0] += 1
        msg = new_msg()
        frame = await asyncio.to_thread(encode_frame, ident, "bench", seq[0], 0.0, msg)   # as node.py
        await client.send(f"http://127.0.0.1:{port}", frame)

    named = new_msg()   # named once, sent to several peers: encode reuses the cached leaves

    async def project_named() -> None:
        mode["decode"] = True
        seq[0] += 1
        frame = await asyncio.to_thread(encode_frame, ident, "bench", seq[0], 0.0, named)
        await client.send(f"http://127.0.0.1:{port}", frame)

    async def project_transport() -> None:
        mode["decode"] = False
        await client.send(f"http://127.0.0.1:{port}", pre)

    async def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        w, c = time.perf_counter(), time.process_time()
        await fn()
        return time.perf_counter() - w, time.process_time() - c

    for fn in (raw_plain, raw_expect, project_transport, project_e2e, project_named):   # warm-up
        await fn()
    rows: dict[str, list[tuple[float, float]]] = {
        "raw aiohttp, data=bytes": [], "raw aiohttp, data=bytes, expect100": [],
        "raw baseline (faster of the two)": [], "project transport only": [], "project end to end": [],
        "end to end, model already named (further peers)": []}
    for _ in range(args.repeat):
        a = await timed(raw_plain)
        b = await timed(raw_expect)
        rows["raw aiohttp, data=bytes"].append(a)
        rows["raw aiohttp, data=bytes, expect100"].append(b)
        rows["raw baseline (faster of the two)"].append(min(a, b, key=lambda x: x[1]))   # by CPU time
        rows["project transport only"].append(await timed(project_transport))
        rows["project end to end"].append(await timed(project_e2e))
        rows["end to end, model already named (further peers)"].append(await timed(project_named))
    assert server.stats.get("slow_closed", 0) == 0

    print(f"frame: {size / 1e6:.1f} MB over loopback HTTP, one uvloop event loop, {args.repeat} repetitions "
          f"(min / median / max)")
    print(f"  {'':48s} {'wall ms':>23s}   {'cpu ms':>23s}")
    for name, xs in rows.items():
        print(f"  {name:48s} {stats([x[0] * 1e3 for x in xs])}   {stats([x[1] * 1e3 for x in xs])}")
    raw = rows["raw baseline (faster of the two)"]
    for name in ("project end to end", "end to end, model already named (further peers)", "project transport only"):
        for k, label in ((0, "wall"), (1, "cpu")):
            r = [b[k] / p[k] for b, p in zip(raw, rows[name], strict=True)]
            goal = (f"   goal >= {GOAL}: {'met' if statistics.median(r) >= GOAL else 'NOT met'} (median)"
                    if name == "project end to end" else "")
            print(f"  throughput ratio raw / {name} ({label}) {stats(r)}{goal}")

    await session.close()
    await client.stop()
    await server.stop()
    await runner.cleanup()
    await raw_runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=100.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.run(run(args))
    except ImportError:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
