"""Broker restart mid-run in a 4-node MQTT-only cluster (real node processes, real Mosquitto):
counts `peer_gone` events and forked rounds (rounds after the restart with more than one
aggregating node; `--aggregators 1`), and prints per-node aggregation rounds.

    PYTHONPATH=$PWD python benchmarks/mqtt_restart_cluster.py [--outage 3] [--after 60]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import NodeProcess, free_ports, get_json, statuses  # noqa: E402
from mqtt_broker import Broker, find_mosquitto  # noqa: E402

FAST = ["--mnist1d-samples", "4000", "--bootstrap-wait", "3", "--bootstrap-timeout", "15",
        "--ping-timeout", "2", "--aggregation-timeout", "6", "--round-timeout", "15",
        "--sample-size", "3", "--log-level", "info"]


def _max_round(nodes) -> int:
    return max((s["round"] for s in statuses(nodes) if s), default=0)


def run(outage: float, after: float, n: int = 4) -> dict:
    exe = find_mosquitto()
    if exe is None:
        sys.exit("mosquitto not found")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        b = Broker(exe, tmp).start()
        nodes = []
        try:
            for i, p in enumerate(free_ports(n)):
                nodes.append(NodeProcess(p, tmp / f"node-{i}", [*FAST, "--shard", f"{i}/{n}",
                                         "--transport", "mqtt", "--broker", b.url],
                                         tmp / f"node-{i}.log").start())
            for x in nodes:
                x.wait_up(120)
            t0 = time.monotonic()
            while _max_round(nodes) < 3 and time.monotonic() - t0 < 180:
                time.sleep(0.5)
            r0 = _max_round(nodes)
            b.stop()
            time.sleep(outage)
            b.start()
            t_back = time.monotonic()
            time.sleep(after)
            r1 = _max_round(nodes)
            gone = Counter()
            aggs: dict[int, list[int]] = {}
            for i, x in enumerate(nodes):
                for r in get_json(x.url + "/v1/rounds?limit=1000")["rounds"]:
                    for e in r["events"]:
                        if e["kind"] in ("peer_gone", "peer_back"):
                            gone[e["kind"]] += 1
                        if e["kind"] == "aggregate" and r["round"] >= r0:
                            aggs.setdefault(r["round"], []).append(i)
            st = statuses(nodes)
            peers_known = [s and s["peers_known"] for s in st]
            forked = sorted(k for k, v in aggs.items() if len(set(v)) > 1)
            return {"r_at_restart": r0, "r_after": r1, "after_s": round(time.monotonic() - t_back, 1),
                    "peer_gone": gone["peer_gone"], "peer_back": gone["peer_back"],
                    "forked_rounds": len(forked), "forked": forked,
                    "aggregators_in_forked": {k: sorted(set(aggs[k])) for k in forked},
                    "rounds_per_node": [s and s["round"] for s in st], "peers_known": peers_known}
        finally:
            for x in nodes:
                x.kill()
            b.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=3.0)
    ap.add_argument("--after", type=float, default=60.0)
    a = ap.parse_args()
    print(json.dumps(run(a.outage, a.after)))


if __name__ == "__main__":
    main()
