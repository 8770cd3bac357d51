"""A 1,000-identity join flood against a live 3-node HTTP network: round rate before and during.

    PYTHONPATH=. .venv/bin/python benchmarks/join_flood.py [--keys 1000] [--window 40]

Every flood identity is a fresh Ed25519 key with a validly self-signed record whose address
nobody listens on (http://127.0.0.1:9). Each key sends a JOIN ADVERTISE to every node, and one
VIEW with all 1,000 records goes to each node. Prints the rounds completed per minute before and
during the flood, the nodes' view sizes and their rejection counters.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import NodeProcess, free_ports, get_json  # noqa: E402

from gossipnode.core.messages import Advertise, Status, ViewRecord, ViewShare  # noqa: E402
from gossipnode.wire.codec import encode  # noqa: E402
from gossipnode.wire.identity import Identity  # noqa: E402
from gossipnode.wire.records import Ed25519RecordAuth  # noqa: E402

ARGS = ["--mnist1d-samples", "2000", "--bootstrap-wait", "2", "--ping-timeout", "2",
        "--aggregation-timeout", "6", "--round-timeout", "15", "--sample-size", "3"]


def post(url: str, frame: bytes) -> int:
    req = urllib.request.Request(url + "/v1/messages", data=frame, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def rounds(nodes) -> int:
    return min(get_json(n.url + "/v1/status")["round"] for n in nodes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--window", type=float, default=40.0)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="join-flood-"))
    ports = free_ports(3)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    nodes = [NodeProcess(p, tmp / f"n{i}", ARGS + ["--peers", ",".join(u for u in urls if u != urls[i]),
                                                   "--shard", f"{i}/3"], tmp / f"n{i}.log").start()
             for i, p in enumerate(ports)]
    try:
        for n in nodes:
            n.wait_up()
        while rounds(nodes) < 3:
            time.sleep(0.5)
        r0, t0 = rounds(nodes), time.monotonic()
        time.sleep(a.window)
        before = (rounds(nodes) - r0) / (time.monotonic() - t0) * 60
        keys = [Identity.generate() for _ in range(a.keys)]
        recs = [Ed25519RecordAuth(k, "gossipnode").sign(
            ViewRecord(k.public_key, 0, 1, Status.JOIN, ("http://127.0.0.1:9",))) for k in keys]
        r1, t1 = rounds(nodes), time.monotonic()
        seq = time.time_ns() // 1000
        codes: dict[int, int] = {}
        for k, rec in zip(keys, recs, strict=True):
            for u in urls:
                seq += 1
                c = post(u, encode(k, "gossipnode", seq, time.time(), Advertise.of(rec)))
                codes[c] = codes.get(c, 0) + 1
        for u in urls:
            seq += 1
            post(u, encode(keys[0], "gossipnode", seq, time.time(), ViewShare(0, tuple(recs))))
        sent_s = time.monotonic() - t1
        time.sleep(max(0.0, a.window - sent_s))
        during = (rounds(nodes) - r1) / (time.monotonic() - t1) * 60
        print(f"{a.keys} fresh keys, {a.keys * 3} JOIN adverts + 3 VIEWs sent in {sent_s:.1f} s; HTTP codes {codes}")
        print(f"rounds per minute: before {before:.1f}, during the flood {during:.1f} "
              f"(ratio {during / before if before else float('nan'):.2f})")
        for n in nodes:
            s = get_json(n.url + "/v1/status")
            print(f"  {n.url}: peers_known {s['peers_known']}, rejected {s['messages_rejected']}")
    finally:
        for n in nodes:
            n.kill()


if __name__ == "__main__":
    main()
