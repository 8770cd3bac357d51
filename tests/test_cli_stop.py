"""A real `gossipnode start` process: JSON logs, and SIGINT/SIGTERM stop it within 3 s, saying
what it did (LEAVE adverts, checkpoint, exit)."""
from __future__ import annotations

import json
import signal
import time

import pytest

from conftest import wait_for

pytestmark = pytest.mark.slow
FAST = ["--mnist1d-samples", "2000", "--bootstrap-wait", "1", "--ping-timeout", "2", "--sample-size", "1"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_within_3_s_and_logs_each_step_as_json(node_procs, sig) -> None:
    """SIGINT: a node alone; SIGTERM: one of two peers, which must get its LEAVE advert."""
    n = 1 if sig == signal.SIGINT else 2
    nodes = node_procs(n, FAST + ["--log-format", "json"], peers=n > 1, shard=n > 1)
    node = nodes[0]
    for p in nodes:
        p.wait_up(120)
    wait_for(lambda: node.status()["rounds_trained"] >= 1 and node.status()["peers_active"] == n - 1, 120,
             "a trained round (and the peer)", nodes)
    t0 = time.monotonic()
    node.proc.send_signal(sig)
    rc = node.proc.wait(10)
    took = time.monotonic() - t0
    print(f"{sig.name}: exited {took:.2f} s after the signal")
    assert rc == 0, node.log()
    assert took < 3.0, f"stopped {took:.2f} s after {sig.name}\n{node.log()}"
    records = [json.loads(line) for line in node.log_path.read_text().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    msgs = [r["msg"] for r in records]
    assert any(f"leaving: {sig.name}" in m for m in msgs)
    assert f"stop: LEAVE advert delivered to {n - 1} of {n - 1} peers" in msgs, msgs[-8:]
    assert any(m.startswith("stop: checkpoint of round") for m in msgs), msgs[-8:]
    assert any(m.startswith("stop: node") and "stopped in" in m for m in msgs), msgs[-8:]
    assert any(m.startswith("stopped ") and "after the signal; exit 0" in m for m in msgs), msgs[-8:]
    assert json.loads((node.state_dir / "status.json").read_text())["finished"] is True
    if n > 1:   # the other node took the LEAVE: the stopped node is no longer active there
        other = nodes[1]
        wait_for(lambda: other.status()["peers_active"] == 0, 10, "the peer to see the LEAVE", nodes)


def test_attacker_host_stops_cleanly_on_sigterm(node_procs) -> None:
    """`--attack` runs several identities behind one server; SIGTERM closes it once (no traceback)."""
    (node,) = node_procs(1, FAST + ["--attack", "labelflip", "--sybils", "2"], peers=False, shard=False)
    node.wait_up(120)
    t0 = time.monotonic()
    assert node.terminate(10) == 0, node.log()
    took = time.monotonic() - t0
    assert took < 3.0, took
    assert "Traceback" not in node.log_path.read_text()
