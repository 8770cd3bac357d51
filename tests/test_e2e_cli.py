"""The CLI as real subprocesses: start, /v1/status, `gossipnode status`, restart resumes, data split."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from conftest import ROOT, get_json

pytestmark = pytest.mark.slow
FAST = ["--mnist1d-samples", "2000", "--bootstrap-wait", "1", "--ping-timeout", "2"]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gossipnode", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_status_api_and_command_and_restart_resumes(node_procs) -> None:
    (node,) = node_procs(1, FAST + ["--sample-size", "1", "--rounds", "3"], peers=False, shard=False)
    s = node.wait_up()
    for key in ("node_id", "public_key", "network_id", "address", "round", "role", "peers_known",
                "peers_active", "model_hash", "rounds_trained", "rounds_aggregated", "last_eval",
                "bytes_sent", "bytes_received", "messages_rejected", "uptime_s", "device", "version", "event_loop"):
        assert key in s, key
    assert s["device"] == "cpu"
    # The event loop keeps answering while the node trains; the node leaves after round 3.
    assert node.proc.wait(120) == 0, node.log()
    ckpt = json.loads((node.state_dir / "checkpoint.json").read_text())
    final = json.loads((node.state_dir / "status.json").read_text())
    assert ckpt["round"] == 4 and final["rounds_trained"] == 3
    assert final["last_eval"]["round"] == 4 and final["last_eval"]["accuracy"] > 0.3
    # the loop-lag monitor ran (sampled every 50 ms) and saw the training rounds
    assert final["event_loop"]["samples"] > 0 and final["event_loop"]["lag_max_ms"] >= 0

    # Restart with the same state dir: same identity, the checkpointed model, counters kept.
    node.args = FAST + ["--sample-size", "1"]
    node.start()
    s2 = node.wait_up()
    assert s2["node_id"] == s["node_id"]
    assert s2["model_hash"] == ckpt["model"]
    assert s2["rounds_trained"] >= 3

    out = _cli("status", node.url)
    assert out.returncode == 0, out.stderr
    assert s["node_id"] in out.stdout and "round" in out.stdout
    js = json.loads(_cli("status", node.url, "--json").stdout)
    assert js["node_id"] == s["node_id"]

    for path in ("/v1/peers", "/v1/rounds", "/openapi.json"):
        assert get_json(node.url + path)
    with urllib.request.urlopen(node.url + "/metrics") as r:
        assert b"gossipnode_round" in r.read()
    with urllib.request.urlopen(node.url + f"/v1/models/{ckpt['model']}") as r:
        assert r.headers["X-Model-Hash"] == ckpt["model"]
    assert node.terminate() == 0  # SIGTERM: graceful leave, exit code 0


def test_status_command_without_node_fails_clearly() -> None:
    out = _cli("status", "http://127.0.0.1:9")
    assert out.returncode == 1 and "no node answers" in out.stderr


def test_bad_flags_rejected_clearly() -> None:
    out = _cli("start", "--shard", "5/3")
    assert out.returncode == 2 and "shard" in out.stderr


def test_data_split_writes_loadable_shards(tmp_path) -> None:
    out = _cli("data", "split", "--dataset", "mnist1d", "--nodes", "4", "--partition", "dirichlet:0.5",
               "--mnist1d-samples", "2000", "--out", str(tmp_path / "shards"))
    assert out.returncode == 0, out.stderr
    files = sorted((tmp_path / "shards").glob("*.npz"))
    assert len(files) == 4
    sizes = []
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            assert {"x", "y", "x_test", "y_test"} <= set(z.files)
            sizes.append(len(z["y"]))
    assert sum(sizes) == 1600  # 80 % train split of 2000, all assigned
    # --from FILE.npz: a user's own data
    src = tmp_path / "mine.npz"
    np.savez(src, x=np.random.rand(100, 5).astype("f4"), y=np.arange(100) % 3)
    out = _cli("data", "split", "--from", str(src), "--nodes", "2", "--out", str(tmp_path / "mine"))
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "mine").glob("*.npz"))) == 2


def test_node_runs_on_users_npz(tmp_path, node_procs) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 40)).astype("f4")
    y = (x[:, 0] > 0).astype("i8")
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:100], y_test=y[:100])
    (node,) = node_procs(1, ["--data", str(tmp_path / "d.npz"), "--model", "mlp", "--bootstrap-wait", "1",
                             "--sample-size", "1", "--rounds", "2"], peers=False, shard=False)
    node.wait_up()
    assert node.proc.wait(120) == 0, node.log()
    final = json.loads((node.state_dir / "status.json").read_text())
    assert final["last_eval"]["samples"] == 100 and final["last_eval"]["accuracy"] > 0.6
    time.sleep(0)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cluster_stops_all_nodes_on_signal(tmp_path, sig) -> None:
    """Ctrl-C or `kill` stops every node of a cluster, gracefully. The cluster starts with SIGINT
    ignored, as a shell starts background jobs (CI once left both nodes running that way)."""
    from conftest import free_ports
    base = free_ports(1)[0]
    if base > 65000:
        base = 40000 + base % 20000
    proc = subprocess.Popen([sys.executable, "-m", "gossipnode", "cluster", "--nodes", "2", "--base-port", str(base),
                             "--dir", str(tmp_path), "--mnist1d-samples", "2000", "--bootstrap-wait", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint)
    try:
        deadline = time.monotonic() + 90
        up = False
        while time.monotonic() < deadline and not up:
            try:
                up = all(get_json(f"http://127.0.0.1:{base + i}/v1/status")["round"] >= 1 for i in range(2))
            except OSError:
                pass
            time.sleep(0.5)
        assert up, proc.stdout.read() if proc.poll() is not None else "cluster did not come up"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 128 + sig, out
        assert f"interrupted ({signal.Signals(sig).name})" in out and "final" in out
        for i in range(2):
            final = json.loads((tmp_path / f"node-{i}" / "status.json").read_text())  # written on graceful stop
            assert final["finished"] is True
            assert "leaving: SIGTERM" in (tmp_path / f"node-{i}.log").read_text()  # forwarded by the cluster
            try:
                get_json(f"http://127.0.0.1:{base + i}/v1/status", timeout=1)
                raise AssertionError("a node is still answering after the cluster stopped")
            except OSError:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
        # Nodes run in their own sessions: never leave them running behind a failed test.
        subprocess.run(["pkill", "-KILL", "-f", str(tmp_path)], check=False)
