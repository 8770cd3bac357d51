"""`--train-process on` (issue 12, item 6): training in a child process gives the same models as
training in the node's process; the child's log goes through the node's logging (valid JSON
lines with --log-format json); it runs at --train-nice; SIGTERM or SIGKILL of the node leaves no child behind."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

FAST = ["--mnist1d-samples", "2000", "--bootstrap-wait", "1", "--ping-timeout", "2", "--sample-size", "1",
        "--train-process", "on", "--log-format", "json"]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _nice(pid: int, tid: int | None = None) -> int:
    stat = Path(f"/proc/{pid}/task/{tid or pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])   # field 19 of proc_pid_stat(5)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_child_trains_the_same_models_as_the_node_process(tmp_path) -> None:
    """Bit-identical for a fixed seed: the child builds its learner from the same settings and
    its batch order advances call by call as the node's own would."""
    from gossipnode.learn.learner import Learner
    from gossipnode.runtime.config import load_config
    from gossipnode.runtime.trainproc import RemoteLearner, make_learner
    cfg = load_config(None, env={}, overrides={"train_process": "on", "device": "cpu", "mnist1d_samples": 2000,
                                               "state_dir": str(tmp_path)})
    remote = make_learner(cfg, 7)
    assert isinstance(remote, RemoteLearner)
    try:
        remote.warm_up()
        local = Learner.create(cfg, init_seed=7)
        ma, mb = remote.initial, local.initial
        for _ in range(2):
            (ma, sa), (mb, sb) = remote.train(ma, threading.Event()), local.train(mb, threading.Event())
            assert all(a.name == b.name and a.data == b.data for a, b in zip(ma, mb, strict=True))
            assert (sa.samples, sa.steps, sa.loss) == (sb.samples, sb.steps, sb.loss)
        cancel = threading.Event()
        cancel.set()
        from gossipnode.learn.trainer import TrainingCancelled
        with pytest.raises(TrainingCancelled):
            remote.train(ma, cancel)
    finally:
        remote.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_child_outlives_the_node(node_procs, sig) -> None:
    (node,) = node_procs(1, FAST, peers=False, shard=False)
    node.wait_up()
    deadline = time.monotonic() + 90
    while node.status()["rounds_trained"] < 1:
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.3)
    kids = _children(node.proc.pid)
    assert kids, "no training child process"
    # --train-nice (default 10): every thread of the child, torch's included, yields to the node
    want = min(19, _nice(node.proc.pid) + 10)
    for k in kids:
        tids = [int(t.name) for t in Path(f"/proc/{k}/task").glob("*")]
        assert tids and all(_nice(k, t) == want for t in tids), [(t, _nice(k, t)) for t in tids]
    os.kill(node.proc.pid, sig)
    rc = node.proc.wait(30)
    assert all(_gone(k) for k in kids), f"child {kids} outlived the node"
    if sig == signal.SIGTERM:
        assert rc == 0, node.log()
        lines = [ln for ln in node.log_path.read_text().splitlines() if ln.strip()]
        records = [json.loads(ln) for ln in lines]   # every line is JSON: nothing raw from the child
        assert any("training in child process" in r["msg"] for r in records), lines[-5:]
        # the child stopped quietly: no error, and nothing on its stderr (logged as "training process: ...")
        assert not [r for r in records if r["level"] in ("error", "critical")], lines
        assert not [r for r in records if r["msg"].startswith("training process")], lines


def test_what_the_child_sends_is_checked() -> None:
    from gossipnode.runtime.trainchild import unpack_model
    good = unpack_model([["w", "<f4", [2, 3], bytes(24)]])
    assert good[0].shape == (2, 3) and len(good[0].data) == 24
    for bad in ([["w", "<f4", [2, 3], bytes(23)]], [["w", "<f4", [-1], b""]], [["w", "nonsense", [1], b"x"]],
                "x", [["w", "<f4", [1]]], [[1, "<f4", [1], bytes(4)]]):
        with pytest.raises(ValueError):
            unpack_model(bad)
