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
    (node,) = node_procs(1, FAST + ["--log-format", "json"], peers=False, shard=False)
    node.wait_up(120)
    wait_for(lambda: node.status()["rounds_trained"] >= 1, 120, "a trained round", [node])
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
    assert any(m.startswith("stop: checkpoint of round") for m in msgs), msgs[-8:]
    assert any(m.startswith("stop: node") and "stopped in" in m for m in msgs), msgs[-8:]
    assert any(m.startswith("stopped ") and "after the signal; exit 0" in m for m in msgs), msgs[-8:]
    assert json.loads((node.state_dir / "status.json").read_text())["finished"] is True
