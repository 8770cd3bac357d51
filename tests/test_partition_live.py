"""A partition of real node processes (issue 14, SPEC 15.5), reduced: 4 nodes on their own
loopback addresses, each behind a fault-injecting proxy; a 2/2 cut longer than tau rounds,
then a heal. The full scenarios (3/3, 1/5, short and long cuts) are benchmarks/partition.py."""
from __future__ import annotations

import time

import pytest

from conftest import get_json, statuses, wait_for
from fault_proxy import start_cluster

pytestmark = pytest.mark.slow

ARGS = ["--mnist1d-samples", "2000", "--bootstrap-wait", "2", "--ping-timeout", "1",
        "--aggregation-timeout", "4", "--round-timeout", "10", "--sample-size", "2",
        "--inactivity-threshold", "4", "--log-level", "info"]


def rounds_of(nodes) -> list[int]:
    return [s["round"] if s else -1 for s in statuses(nodes)]


def test_a_cut_longer_than_tau_keeps_both_parts_going_and_heals_with_a_merge(tmp_path) -> None:
    nodes, part, hosts = start_cluster(tmp_path, 4, 21, ARGS)
    try:
        for n in nodes:
            n.wait_up()
        wait_for(lambda: min(rounds_of(nodes)) >= 5, 60, "round 5 everywhere", nodes)
        a, b = nodes[:2], nodes[2:]
        part.cut(hosts[:2], hosts[2:])
        time.sleep(5)   # the first rounds after the cut wait out time-outs once
        ra, rb = max(rounds_of(a)), max(rounds_of(b))
        time.sleep(12)
        # both parts go on (tau = 4 rounds: far longer than tau), each on its own
        assert max(rounds_of(a)) >= ra + 4 and max(rounds_of(b)) >= rb + 4, (ra, rb, rounds_of(nodes))
        assert all(s["peers_active"] <= 1 for s in statuses(nodes))
        assert sum(p.dropped for p in part.proxies) > 0
        part.heal()
        t_heal = time.monotonic()

        def one_network() -> bool:
            st = statuses(nodes)
            if not all(st):
                return False
            rs = [s["round"] for s in st]
            return (all(s["peers_active"] == 3 and s["peers_unreachable"] == 0 for s in st)
                    and max(rs) - min(rs) <= 4)
        wait_for(one_network, 60, "one network again (all peers active, one round sequence)", nodes)
        healed_s = time.monotonic() - t_heal
        # the lineages were merged, and it shows in /v1/rounds
        def merged() -> bool:
            ev = [e for n in nodes for r in get_json(n.url + "/v1/rounds")["rounds"] for e in r["events"]]
            return any(e["kind"] == "merge" for e in ev)
        wait_for(merged, 30, "a merge event", nodes)
        assert healed_s < 60
        assert all(s["last_eval"] and s["last_eval"]["accuracy"] > 0.3 for s in statuses(nodes))
    finally:
        for n in nodes:
            n.kill()
        part.close()
