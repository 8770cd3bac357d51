"""Broker restart against N MqttTransports (real Mosquitto, loopback): how long after the broker
listens again is each node reconnected (and re-announced), and does any node take a peer's last
will as a departure (SPEC 14.3: wills are held for the grace, dropped on re-announce).

    PYTHONPATH=$PWD python benchmarks/mqtt_reconnect.py [--nodes 4] [--outage 3] [--trials 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from mqtt_broker import Broker, find_mosquitto  # noqa: E402

from gossipnode.transport.mqtt import MqttTransport  # noqa: E402
from gossipnode.wire.identity import Identity  # noqa: E402

NET = "bench-net"


async def _handler(frame: bytes, reply_to: str | None) -> None:
    return None


async def restart(broker: Broker, nodes: int = 4, outage: float = 3.0, trials: int = 1,
                  **kw) -> dict:
    ids = [Identity.generate() for _ in range(nodes)]
    gone: list[tuple[int, bytes]] = []
    ts = [MqttTransport(broker.url, i.node_id, NET, **kw) for i in ids]
    for k, (t, i) in enumerate(zip(ts, ids, strict=True)):
        t.bind(i, (t.address,), lambda *a: None, lambda pk, k=k: gone.append((k, pk)))
    reconnect: list[float] = []
    held = withdrawn = 0
    try:
        for t in ts:
            await t.start(_handler)
        await _until(lambda: all(len(t.peers.peer_sessions) == nodes - 1 for t in ts), 10)
        for _ in range(trials):
            before = [t.stats["connects"] for t in ts]
            broker.stop()
            await _until(lambda: not any(t.connected for t in ts), 15)
            await asyncio.sleep(outage)
            broker.start()
            t_back = time.monotonic()
            await _until(lambda b=before: all(t.stats["connects"] > c for t, c in zip(ts, b, strict=True)), 15)
            reconnect += [t.last_connect - t_back for t in ts if t.last_connect is not None]
            # everyone re-announced (new sessions), and the held wills were dropped
            await _until(lambda: all(not t.peers.held_wills for t in ts), 10)
        await asyncio.sleep(max(t.peers.will_grace for t in ts) + 0.5)   # anything still held would count now
        held = sum(t.stats["wills_held"] for t in ts)
        withdrawn = sum(t.stats["wills_withdrawn"] for t in ts)
    finally:
        for t in ts:
            await t.stop()
    reconnect.sort()
    return {"nodes": nodes, "trials": trials, "outage_s": outage,
            "reconnect_s_median": round(reconnect[len(reconnect) // 2], 3) if reconnect else None,
            "reconnect_s_max": round(reconnect[-1], 3) if reconnect else None,
            "wills_held": held, "wills_withdrawn": withdrawn, "peer_gone": len(gone)}


async def _until(pred, timeout: float) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--outage", type=float, default=3.0)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--backoff-max", type=float, default=None, help="override (e.g. 10 = the old cap)")
    a = ap.parse_args()
    exe = find_mosquitto()
    if exe is None:
        sys.exit("mosquitto not found")
    kw = {} if a.backoff_max is None else {"backoff_max": a.backoff_max}
    with tempfile.TemporaryDirectory() as d:
        b = Broker(exe, Path(d)).start()
        try:
            print(json.dumps(asyncio.run(restart(b, a.nodes, a.outage, a.trials, **kw))))
        finally:
            b.stop()


if __name__ == "__main__":
    main()
