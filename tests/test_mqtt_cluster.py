"""Real node processes over a real Mosquitto: an MQTT-only cluster learns MNIST-1D (peers found
through retained announces, no --peers), a mixed HTTP/MQTT cluster learns, the broker restarts
mid-run, and a SIGKILLed node's last will reaches the others."""
from __future__ import annotations

import time

import pytest
from conftest import NodeProcess, free_ports, get_json, statuses, wait_for
from mqtt_broker import mosquitto_fixture  # noqa: F401  (the `mosquitto` fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

FAST = ["--mnist1d-samples", "4000", "--bootstrap-wait", "3", "--bootstrap-timeout", "15",
        "--ping-timeout", "2", "--aggregation-timeout", "6", "--round-timeout", "15",
        "--sample-size", "3", "--log-level", "info"]


HONEST = {"worse_model", "unfit_base", "round_out_of_range"}   # refusals honest timing explains


def _start(tmp_path, n: int, per_node_args, common: list[str]) -> list[NodeProcess]:
    ports = free_ports(n)
    nodes = []
    for i, p in enumerate(ports):
        args = [*common, "--shard", f"{i}/{n}", *per_node_args(i, ports)]
        nodes.append(NodeProcess(p, tmp_path / f"node-{i}", args, tmp_path / f"node-{i}.log").start())
    return nodes


def _accs(nodes) -> list[float]:
    return [s["last_eval"]["accuracy"] if s and s["last_eval"] and s["last_eval"]["round"] > 0 else 0.0
            for s in statuses(nodes)]


def _max_round(nodes) -> int:
    return max((s["round"] for s in statuses(nodes) if s), default=0)


@pytest.fixture
def cleanup():
    nodes: list[NodeProcess] = []
    yield nodes
    for n in nodes:
        n.kill()


def test_mqtt_only_cluster_learns_without_peers_flag(mosquitto, tmp_path, cleanup) -> None:
    nodes = _start(tmp_path, 4, lambda i, ports: [],
                   FAST + ["--transport", "mqtt", "--broker", mosquitto.url])
    cleanup.extend(nodes)
    for n in nodes:
        n.wait_up()
    t0 = time.monotonic()
    # every node finds the other three through the broker's retained announces
    wait_for(lambda: all(s and s["peers_known"] == 3 for s in statuses(nodes)), 30, "discovery", nodes)
    for s in statuses(nodes):
        assert s["addresses"] == [f"mqtt://{s['node_id']}"]     # no http address is advertised
    # Stated bar: mean test accuracy >= 0.85 on MNIST-1D (4000 samples, 4 iid shards) within 90 s.
    # Measured on 2 CPU cores: 0.82 after 15 s, 0.91 after 20 s, 0.93-0.95 from 30 s on.
    took = wait_for(lambda: sum(_accs(nodes)) / len(nodes) >= 0.85, 90, "mean accuracy >= 0.85", nodes)
    st = statuses(nodes)
    print(f"MQTT-only: mean accuracy {sum(_accs(nodes)) / 4:.3f} at round {_max_round(nodes)}, "
          f"{time.monotonic() - t0:.0f} s after start ({took:.0f} s waiting)")
    assert sum(s["rounds_aggregated"] for s in st) >= 3
    # nothing but what honest timing explains (as tests/test_integration_http.py; CI once saw one)
    assert all(set(s["messages_rejected"]) <= HONEST for s in st), [s["messages_rejected"] for s in st]


def test_mixed_http_and_mqtt_cluster_learns(mosquitto, tmp_path, cleanup) -> None:
    # nodes 0, 1: HTTP only; 2, 3: MQTT only; 4: both (the bridge between the two groups)
    kinds = ["http", "http", "mqtt", "mqtt", "http,mqtt"]

    def args(i: int, ports: list[int]) -> list[str]:
        a = ["--transport", kinds[i]]
        if "mqtt" in kinds[i]:
            a += ["--broker", mosquitto.url]
        if i < 2:   # HTTP-only nodes bootstrap from the other HTTP-speaking nodes
            a += ["--peers", ",".join(f"http://127.0.0.1:{ports[j]}" for j in (0, 1, 4) if j != i)]
        return a

    # No --rounds bound: a node that finished its rounds stops learning before the bar is met
    # (the flaky failure of a 40-round run); the wait below bounds the test, cleanup stops it.
    nodes = _start(tmp_path, 5, args, FAST + ["--inactivity-threshold", "6"])
    cleanup.extend(nodes)
    for n in nodes:
        n.wait_up()
    # A peer enters a view only once it answered a ping at its own signed address (SPEC 4.1), so
    # each node lists exactly the peers it shares a transport with: HTTP-only and MQTT-only nodes
    # see each other's records (relayed by the bridge) but never list each other.
    reach = [sum(1 for j, kj in enumerate(kinds) if j != i and set(ki.split(",")) & set(kj.split(",")))
             for i, ki in enumerate(kinds)]
    wait_for(lambda: [s and s["peers_known"] for s in statuses(nodes)] == reach, 40, "reachable views", nodes)
    bridge = nodes[4].status()
    assert {a.split("://")[0] for a in bridge["addresses"]} == {"http", "mqtt"}
    # Stated bar: every node >= 0.60 (the HTTP-only and MQTT-only nodes only meet via the bridge).
    took = wait_for(lambda: min(_accs(nodes)) >= 0.60, 120, "every node's accuracy >= 0.60", nodes)
    print(f"mixed: accuracies {[round(a, 3) for a in _accs(nodes)]} at round {_max_round(nodes)} "
          f"after {took:.0f} s")


def test_broker_restart_mid_run_and_last_will_of_a_crashed_node(mosquitto, tmp_path, cleanup) -> None:
    nodes = _start(tmp_path, 4, lambda i, ports: [],
                   FAST + ["--transport", "mqtt", "--broker", mosquitto.url])
    cleanup.extend(nodes)
    for n in nodes:
        n.wait_up()
    wait_for(lambda: _max_round(nodes) >= 3, 90, "round 3", nodes)
    r0 = _max_round(nodes)
    mosquitto.stop()
    time.sleep(3.0)
    mosquitto.start()
    t_back = time.monotonic()
    took = wait_for(lambda: _max_round(nodes) >= r0 + 3, 90, "3 more rounds after the broker restart", nodes)
    print(f"broker restart: round {r0} -> {_max_round(nodes)}; 3 rounds {took:.1f} s after it came back")
    assert all(s["peers_known"] == 3 for s in statuses(nodes))
    assert time.monotonic() - t_back < 90
    # a broker restart is not a departure (SPEC 14.3 will grace): the wills its shutdown
    # published are held and dropped when the peers re-announce (main before: 6 peer_gone)
    gone = [e for n in nodes for r in get_json(n.url + "/v1/rounds?limit=1000")["rounds"]
            for e in r["events"] if e["kind"] == "peer_gone"]
    print(f"broker restart: {len(gone)} peer_gone events")
    assert gone == []

    # SIGKILL: no LEAVE advert is sent; the broker publishes the node's last will
    victim = nodes[0]
    victim_id = victim.status()["node_id"]
    victim.kill()
    survivors = nodes[1:]

    def marked_gone() -> bool:
        for n in survivors:
            peers = {p["node_id"]: p for p in get_json(n.url + "/v1/peers")["peers"]}
            if victim_id not in peers or peers[victim_id]["status"] != "leave":
                return False
        return True

    took = wait_for(marked_gone, 15, "the last will marking the crashed node as left", survivors)
    print(f"last will: crashed node marked as left on all survivors within {took:.1f} s")
    r1 = _max_round(survivors)
    wait_for(lambda: _max_round(survivors) >= r1 + 2, 90, "2 more rounds without the crashed node", survivors)
