"""What an anonymous client of the MQTT broker can do to a node (issue 9, item 7), measured.

Starts its own Mosquitto (anonymous access, as deploy/mosquitto.conf) on a free loopback port,
a victim node transport V and an observer transport O (both real MqttTransports), and an
attacker that is just another broker client. It tries:

* kick:    connect with V's client id as derived from V's public retained announce
           (`gn-<node_id>-<first 8 hex of session>`, the id nodes used before issue 9) and a few
           other guesses; counts how often V lost its connection and how often O took the will
           that the broker then published as "V is gone";
* replay:  V's connection really breaks once (a TCP proxy between V and the broker cuts it), so
           the broker publishes V's will and the attacker captures it; V reconnects; the attacker
           then publishes the captured will again; counts how often O took it as "V is gone";
* clear:   the attacker publishes an empty retained payload to V's announce topic (what a clean
           stop does); counts how often a node joining 1 s later still finds V's announce.

    .venv/bin/python benchmarks/mqtt_broker_client.py [--tries 20] [--replays 5]

Run it with PYTHONPATH pointing at an older tree to measure that one (numbers in SPEC §14.5).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import aiomqtt  # noqa: E402
from mqtt_broker import Broker, find_mosquitto  # noqa: E402

from gossipnode.transport.mqtt import MqttTransport  # noqa: E402
from gossipnode.wire.identity import Identity  # noqa: E402

NET = "bench-net"


class Proxy:
    """A loopback TCP forwarder whose live connections can be cut (a network loss for V)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self.writers += [w, uw]

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            with contextlib.suppress(Exception):
                b.close()
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def cut(self) -> None:
        for w in self.writers:
            with contextlib.suppress(Exception):
                w.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def _until(cond, timeout: float) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


async def _retained(url_port: int, topic: str, timeout: float = 1.0) -> bytes | None:
    async with aiomqtt.Client("127.0.0.1", url_port, protocol=aiomqtt.ProtocolVersion.V5) as c:
        await c.subscribe(topic, qos=1)
        try:
            async with asyncio.timeout(timeout):
                async for m in c.messages:
                    return bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
        except TimeoutError:
            return None
    return None


class Setup:
    def __init__(self, port: int, victim_port: int | None = None) -> None:
        self.port = port
        self.vid, self.oid = Identity.generate(), Identity.generate()
        self.gone: list[bytes] = []
        self.v = MqttTransport(f"mqtt://127.0.0.1:{victim_port or port}", self.vid.node_id, NET,
                               backoff_initial=0.05, backoff_max=0.2)
        self.v.bind(self.vid, (self.v.address,), lambda *a: None, lambda pk: None)
        # will_grace=0: measure the session rules alone (SPEC 14.3; the grace would hide a kick too)
        self.o = MqttTransport(f"mqtt://127.0.0.1:{port}", self.oid.node_id, NET, will_grace=0.0)
        self.o.bind(self.oid, (self.o.address,), lambda *a: None, self.gone.append)

    async def start(self) -> Setup:
        async def h(frame: bytes, reply_to: str | None) -> None:
            return None
        await self.v.start(h)
        await self.o.start(h)
        await _until(lambda: self.o.stats["announces"] >= 1, 5)
        return self

    def announce_topic(self) -> str:
        return self.v.announce_topic(self.vid.node_id)

    async def stop(self) -> None:
        await self.v.stop()
        await self.o.stop()


def _guesses(node_id: str, session: str) -> list[str]:
    return [f"gn-{node_id}-{session[:8]}", f"gn-{node_id}-{session}", f"gn-{node_id}", node_id]


async def kick(port: int, tries: int) -> dict:
    s = await Setup(port).start()
    kicked = wills = 0
    try:
        for _ in range(tries):
            await _until(lambda: s.v.connected, 5)
            await asyncio.sleep(0.3)
            rec = await _retained(port, s.announce_topic())
            session = json.loads(rec)["session"] if rec else "0" * 32
            before, gone_before = s.v.stats["disconnects"], len(s.gone)
            for cid in _guesses(s.vid.node_id, session):
                with contextlib.suppress(aiomqtt.MqttError):
                    async with aiomqtt.Client("127.0.0.1", port, identifier=cid,
                                              protocol=aiomqtt.ProtocolVersion.V5):
                        await asyncio.sleep(0.05)
            await _until(lambda b=before: s.v.stats["disconnects"] > b, 0.5)
            kicked += s.v.stats["disconnects"] > before
            await _until(lambda g=gone_before: len(s.gone) > g, 0.3)
            wills += len(s.gone) > gone_before
    finally:
        await s.stop()
    return {"tries": tries, "victim_disconnected": kicked, "observer_took_will": wills}


async def replay(port: int, replays: int) -> dict:
    proxy = await Proxy(port).start()
    s = await Setup(port, victim_port=proxy.port).start()
    captured: list[bytes] = []
    accepted = 0
    try:
        async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as att:
            await att.subscribe(s.announce_topic(), qos=1)

            async def listen() -> None:
                async for m in att.messages:
                    p = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
                    if p and json.loads(p)["status"] == "gone":
                        captured.append(p)
            listener = asyncio.ensure_future(listen())
            announces = s.o.stats["announces"]
            proxy.cut()                                   # a real connection loss of V
            if not await _until(lambda: bool(captured), 15):
                raise RuntimeError("no will was published after the connection loss")
            real_gone = len(s.gone)
            # V reconnects (same process) and re-announces; O sees it
            await _until(lambda: s.v.connected and s.o.stats["announces"] > announces, 10)
            for _ in range(replays):
                before = len(s.gone)
                await att.publish(s.announce_topic(), captured[0], qos=1, retain=True)
                await _until(lambda b=before: len(s.gone) > b, 1.0)
                accepted += len(s.gone) > before
            listener.cancel()
    finally:
        await s.stop()
        await proxy.stop()
    return {"replays": replays, "observer_took_replayed_will": accepted,
            "real_will_taken": real_gone >= 1, "stale_wills_counted": s.o.stats.get("stale_wills", 0)}


async def clear(port: int, tries: int) -> dict:
    s = await Setup(port).start()
    still = 0
    try:
        async with aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5) as att:
            for _ in range(tries):
                await att.publish(s.announce_topic(), b"", qos=1, retain=True)
                await asyncio.sleep(1.0)
                rec = await _retained(port, s.announce_topic(), 0.5)
                still += bool(rec) and json.loads(rec)["status"] == "up"
    finally:
        await s.stop()
    return {"tries": tries, "announce_still_found_1s_later": still}


async def amain(args: argparse.Namespace) -> dict:
    exe = find_mosquitto()
    if exe is None:
        raise SystemExit("mosquitto not found (Debian: apt-get install -y mosquitto)")
    with tempfile.TemporaryDirectory() as d:
        b = Broker(exe, Path(d)).start()
        try:
            return {"kick": await kick(b.port, args.tries), "replay": await replay(b.port, args.replays),
                    "clear": await clear(b.port, args.clears)}
        finally:
            b.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tries", type=int, default=20)
    p.add_argument("--replays", type=int, default=5)
    p.add_argument("--clears", type=int, default=5)
    args = p.parse_args()
    t0 = time.perf_counter()
    res = asyncio.run(amain(args))
    for name, r in res.items():
        print(f"{name:8s} " + ", ".join(f"{k}={v}" for k, v in r.items()))
    print(f"({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
