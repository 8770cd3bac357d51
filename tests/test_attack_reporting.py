"""Attack rates only where there is an attack: evaluations, /v1/status, /v1/rounds, the cluster
table and the simulator report them only when an attack is configured (issue 10, item 3)."""
from __future__ import annotations

import asyncio

import pytest
from rich.console import Console

from gossipnode.cli.cluster import _table
from gossipnode.runtime.config import NodeConfig
from gossipnode.learn import data as ldata
from gossipnode.runtime.node import Node
from gossipnode.sim import SimConfig, run_sim

from conftest import free_ports, get_json


async def _evaluated_node(tmp_path, **kw) -> Node:
    (port,) = free_ports(1)
    cfg = NodeConfig(port=port, state_dir=str(tmp_path / "n"), mnist1d_samples=1000, network_id="t",
                     bootstrap_wait=600, bootstrap_timeout=600, **kw)
    n = Node(cfg)
    await n.start()
    await n._evaluate(n.current, 0, "start")  # the evaluation a node runs on every adopted model
    return n


@pytest.mark.parametrize("eval_attack,expected", [("", set()), ("backdoor", {"backdoor"}),
                                                  ("labelflip,backdoor", {"label-flip", "backdoor"})])
async def test_daemon_reports_attack_rates_only_when_configured(tmp_path, eval_attack, expected) -> None:
    node = await _evaluated_node(tmp_path, eval_attack=eval_attack)
    try:
        status = await asyncio.to_thread(get_json, node.cfg.address + "/v1/status")
        rounds = (await asyncio.to_thread(get_json, node.cfg.address + "/v1/rounds"))["rounds"]
        ev = status["last_eval"]
        assert ev is not None and "accuracy" in ev
        assert set(ev.get("attack_rate", {})) == expected
        assert ("attack_rate" in ev) == bool(expected)
        assert rounds and all(("attack_rate" in r) == bool(expected) for r in rounds if "accuracy" in r)
        # the cluster table has an attack-rate column exactly when the nodes report one
        console = Console(width=250, record=True)
        console.print(_table([status], "t"))
        text = console.export_text()
        assert ("rate" in text) == bool(expected)
        for a in expected:
            assert f"{a} rate" in text
    finally:
        await node.stop(graceful=False)


def test_sim_reports_attack_rate_only_with_an_attack_or_a_baseline_request() -> None:
    data = ldata.load_mnist1d(num_samples=2000)
    base = SimConfig(protocol="fl", nodes=4, rounds=2, sample_size=2, eval_samples=200)
    plain = run_sim(base, data=data)
    assert plain["summary"]["final_attack_rate"] is None
    assert all(p["attack_rate"] is None for p in plain["series"])
    # a no-attack baseline of the same metric, asked for explicitly
    baseline = run_sim(base.__class__(**{**base.to_dict(), "eval_attack": "backdoor"}), data=data)
    # without an attack the trigger does nothing (measured 0.0 for seeds 0-2)
    assert baseline["summary"]["final_attack_rate"] == baseline["series"][-1]["attack_rate"]
    assert baseline["summary"]["final_attack_rate"] < 0.1
    attacked = run_sim(SimConfig(**{**base.to_dict(), "protocol": "modest", "attack": "labelflip",
                                    "sybils": 0.5, "eval_attack": "backdoor"}), data=data)
    row = attacked["series"][-1]
    assert set(row["attack_rates"]) == {"label-flip", "backdoor"}
    assert row["attack_rate"] == row["attack_rates"]["label-flip"]  # the configured attack first
