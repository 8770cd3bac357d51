"""A fault-injecting TCP proxy in front of each node, for partition tests (no root needed).

Every node listens on its own loopback address 127.0.0.X (its outbound connections leave from
that address too: the HTTP client binds --host), and advertises the proxy's port on the same
address. A cut makes each proxy drop the bytes of connections from the other part's addresses,
both ways, on open connections and new ones alike: what a firewall DROP rule does (a request
hangs until the sender's time-out), without nftables or separate user ids.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path

from conftest import NodeProcess, free_ports


class FaultProxy:
    def __init__(self, host: str, port: int, target_port: int) -> None:
        self.host, self.port, self.target_port = host, port, target_port
        self.blocked: frozenset[str] = frozenset()   # source addresses whose bytes are dropped
        self.dropped = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._conn, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        src = writer.get_extra_info("peername")[0]
        self._writers.add(writer)
        try:
            r2, w2 = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(w2)
        try:
            await asyncio.gather(self._pipe(src, reader, w2), self._pipe(src, r2, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, w2):
                w.close()
                self._writers.discard(w)

    async def _pipe(self, src: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                writer.close()
                return
            if src in self.blocked:
                self.dropped += len(data)   # black hole: the peer sees a hung connection
                continue
            writer.write(data)
            await writer.drain()


class Partitioner:
    """Proxies for a set of nodes on their own event loop thread; `cut(groups)` and `heal()`."""

    def __init__(self, nodes: Iterable[tuple[str, int, int]]) -> None:
        """`nodes`: (loopback address, proxy port, node port) each."""
        self.proxies = [FaultProxy(h, p, t) for h, p, t in nodes]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        for p in self.proxies:
            asyncio.run_coroutine_threadsafe(p.start(), self.loop).result(10)

    def cut(self, *groups: Iterable[str]) -> None:
        """Each group of addresses reaches only itself."""
        sets = [frozenset(g) for g in groups]
        every = frozenset().union(*sets)
        for p in self.proxies:
            own = next((g for g in sets if p.host in g), frozenset({p.host}))
            p.blocked = every - own

    def heal(self) -> None:
        for p in self.proxies:
            p.blocked = frozenset()

    def close(self) -> None:
        for p in self.proxies:
            asyncio.run_coroutine_threadsafe(p.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def start_cluster(tmp: Path, n: int, base: int, args: list[str]) -> tuple[list[NodeProcess], Partitioner, list[str]]:
    """n node processes on 127.0.0.<base+i>, each advertising its proxy (same address, another
    port) and bootstrapping from the others' proxies; `url` is the node itself (REST status)."""
    ports = free_ports(2 * n)
    hosts = [f"127.0.0.{base + i}" for i in range(n)]
    node_ports, proxy_ports = ports[:n], ports[n:]
    part = Partitioner(zip(hosts, proxy_ports, node_ports, strict=True))
    urls = [f"http://{h}:{p}" for h, p in zip(hosts, proxy_ports, strict=True)]
    nodes = []
    for i in range(n):
        a = args + ["--host", hosts[i], "--advertise", urls[i], "--shard", f"{i}/{n}",
                    "--peers", ",".join(u for j, u in enumerate(urls) if j != i)]
        np_ = NodeProcess(node_ports[i], tmp / f"node-{i}", a, tmp / f"node-{i}.log")
        np_.url = f"http://{hosts[i]}:{node_ports[i]}"
        nodes.append(np_.start())
    return nodes, part, hosts
