"""Issue 9 item 8: checkpoints that cannot be written never keep a node from stopping (SIGTERM
exits in < 5 s, non-zero, with one clear line); failures are counted in /v1/status; a torn or
corrupt checkpoint is detected and the previous generation used; JSON output has no NaN."""
from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from conftest import NodeProcess, free_ports
from gossipnode.api import jsonout
from gossipnode.runtime import checkpoint
from gossipnode.runtime.config import NodeConfig
from gossipnode.runtime.node import Node
from gossipnode.wire.tensors import model_hash, to_raw

pytestmark = pytest.mark.timeout(120)


def _model(v: float):
    return (to_raw("w", np.full((3, 4), v, dtype=np.float32)), to_raw("b", np.full(4, v, dtype=np.float32)))


def _save(d: Path, v: float, rnd: int) -> None:
    m = _model(v)
    checkpoint.save(d, m, {"round": rnd, "model": model_hash(m).hex()})


def _loaded_round(d: Path) -> int | None:
    got = checkpoint.load(d)
    return None if got is None else got[1]["round"]


# ---- checkpoint files ------------------------------------------------------------------------
def test_roundtrip_keeps_one_previous_generation(tmp_path) -> None:
    for i in range(4):
        _save(tmp_path, float(i), i)
    model, meta = checkpoint.load(tmp_path)
    assert meta["round"] == 3 and model_hash(model).hex() == meta["model"]
    assert json.loads((tmp_path / checkpoint.PREV_META_FILE).read_text())["round"] == 2
    assert len(list(tmp_path.glob("checkpoint-*.npz"))) == 2     # current + previous, no more


@pytest.mark.parametrize("damage", ["truncate", "wrong_hash", "garbage_json", "missing_npz", "other_model"])
def test_torn_or_corrupt_checkpoint_falls_back_to_previous(tmp_path, damage, caplog) -> None:
    _save(tmp_path, 1.0, 1)
    _save(tmp_path, 2.0, 2)
    cur = tmp_path / checkpoint.META_FILE
    meta = json.loads(cur.read_text())
    npz = tmp_path / meta["file"]
    if damage == "truncate":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    elif damage == "wrong_hash":
        cur.write_text(json.dumps(meta | {"sha256": "0" * 64}))
    elif damage == "garbage_json":
        cur.write_bytes(b'{"round": 2, "tens')
    elif damage == "missing_npz":
        npz.unlink()
    elif damage == "other_model":   # a new npz with an old json: the model hash disagrees
        m = _model(9.0)
        checkpoint.save(tmp_path / "x", m, {"round": 9})
        xm = json.loads((tmp_path / "x" / checkpoint.META_FILE).read_text())
        shutil.copy(tmp_path / "x" / xm["file"], npz)
        cur.write_text(json.dumps(meta | {"sha256": xm["sha256"], "size": xm["size"]}))
    with caplog.at_level(logging.WARNING):
        assert _loaded_round(tmp_path) == 1
    assert "not usable" in caplog.text and "previous checkpoint generation" in caplog.text


def test_torn_legacy_checkpoint_starts_fresh_with_a_warning(tmp_path, caplog) -> None:
    """Format 1 (checkpoint.npz + checkpoint.json, no file hash): the model hash catches a new
    npz with an old json; with no previous generation the node starts fresh."""
    old, new = _model(1.0), _model(2.0)
    np.savez(tmp_path / "checkpoint.npz", t0=np.full((3, 4), 2.0, np.float32), t1=np.full(4, 2.0, np.float32))
    (tmp_path / "checkpoint.json").write_text(json.dumps({"round": 1, "model": model_hash(old).hex(),
                                                          "tensors": ["w", "b"]}))
    with caplog.at_level(logging.WARNING):
        assert checkpoint.load(tmp_path) is None
    assert "starting fresh" in caplog.text
    # an intact legacy checkpoint still loads
    (tmp_path / "checkpoint.json").write_text(json.dumps({"round": 2, "model": model_hash(new).hex(),
                                                          "tensors": ["w", "b"]}))
    assert _loaded_round(tmp_path) == 2


def test_failed_save_leaves_committed_generations_and_no_litter(tmp_path) -> None:
    _save(tmp_path, 1.0, 1)
    before = sorted(p.name for p in tmp_path.iterdir())
    (tmp_path / checkpoint.PREV_META_FILE).mkdir()   # the rotation target cannot be written
    with pytest.raises(OSError):
        _save(tmp_path, 2.0, 2)
    (tmp_path / checkpoint.PREV_META_FILE).rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert _loaded_round(tmp_path) == 1


# ---- JSON output -----------------------------------------------------------------------------
def test_json_output_never_contains_nan() -> None:
    obj = {"a": float("nan"), "b": [float("inf"), -math.inf, 1.5], "c": np.float32("nan"), "d": (2, None)}
    s = jsonout.dumps(obj)
    assert s == '{"a": null, "b": [null, null, 1.5], "c": null, "d": [2, null]}'
    assert "NaN" not in s and "Infinity" not in s


# ---- an in-process node with an unwritable checkpoint --------------------------------------
def _strict_json(body: bytes):
    def bad(c):
        raise ValueError(f"not JSON: {c}")
    return json.loads(body, parse_constant=bad)


async def test_unwritable_checkpoint_is_counted_shown_and_stop_still_ends(tmp_path) -> None:
    (port,) = free_ports(1)
    sd = tmp_path / "n"
    (sd / checkpoint.META_FILE).mkdir(parents=True)   # as root too: a directory cannot be replaced by a file
    cfg = NodeConfig(port=port, state_dir=str(sd), mnist1d_samples=1000, network_id="t",
                     bootstrap_wait=600, bootstrap_timeout=600)
    n = Node(cfg)   # the unreadable "checkpoint" is ignored (a warning), the node starts fresh
    await n.start()
    try:
        assert not await asyncio.to_thread(n._checkpoint)
        for _ in range(600):   # the start evaluation first (else it lands after ours, as round 0)
            if n.telemetry.last_eval is not None:
                break
            await asyncio.sleep(0.05)
        n.telemetry.last_eval = {"round": 1, "accuracy": float("nan"), "loss": float("inf"), "samples": 1,
                       "model_hash": "00"}
        n.telemetry.round(1)["loss"] = float("nan")
        for path in ("/v1/status", "/v1/rounds"):
            async with aiohttp.ClientSession() as sess, sess.get(cfg.address + path) as r:
                body = await r.read()
            doc = _strict_json(body)     # raises on NaN / Infinity
            if path == "/v1/status":
                assert doc["checkpoint_failures"] == 1
                assert "IsADirectoryError" in doc["last_checkpoint_error"]
                assert doc["last_eval"]["accuracy"] is None and doc["last_eval"]["loss"] is None
            else:
                assert doc["rounds"][-1]["loss"] is None
    finally:
        t0 = time.monotonic()
        await n.stop(graceful=True, timeout=3.5)    # must not raise
        took = time.monotonic() - t0
    assert n._stopped.is_set() and took < 5.0
    assert n.stop_error and "could not write the final checkpoint" in n.stop_error
    assert n.worker.checkpoint_failures == 2


# ---- SIGTERM of a real process ---------------------------------------------------------------
FAST = ["--mnist1d-samples", "2000", "--bootstrap-wait", "1", "--ping-timeout", "2", "--sample-size", "1"]


def _sigterm(node: NodeProcess) -> tuple[int, float]:
    assert node.proc is not None
    t0 = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)
    rc = node.proc.wait(15)
    return rc, time.monotonic() - t0


def _last_line(node: NodeProcess) -> str:
    lines = [ln for ln in node.log().splitlines() if ln.startswith("gossipnode:")]
    return lines[-1] if lines else ""


@pytest.mark.slow
def test_sigterm_with_unwritable_checkpoint_exits_fast_nonzero_with_one_line(tmp_path) -> None:
    """The state dir works (identity key) but the checkpoint cannot be written: checkpoint.json
    is a directory. Running as root, chmod would not stop the writes; a directory cannot be
    replaced by a file for anyone, so the save fails with IsADirectoryError as on a read-only disk."""
    (port,) = free_ports(1)
    sd = tmp_path / "state"
    (sd / checkpoint.META_FILE).mkdir(parents=True)
    node = NodeProcess(port, sd, FAST, tmp_path / "node.log").start()
    try:
        node.wait_up()
        deadline = time.monotonic() + 60
        while node.status()["checkpoint_failures"] < 1:     # a round was trained, its save failed
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.3)
        s = node.status()
        assert "IsADirectoryError" in s["last_checkpoint_error"]
        rc, took = _sigterm(node)
    finally:
        node.kill()
    print(f"SIGTERM with an unwritable checkpoint: exit {rc} after {took:.2f} s; {_last_line(node)}")
    assert rc != 0 and took < 5.0, node.log()
    assert sum(ln.startswith("gossipnode:") for ln in node.log().splitlines()) == 1
    assert "could not write the final checkpoint" in _last_line(node)


def _can_mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.mark.slow
def test_sigterm_with_a_full_state_dir(tmp_path) -> None:
    """A real full disk: a 4 MiB tmpfs (needs root and mount rights; skipped otherwise), filled
    up once the node runs."""
    mnt = tmp_path / "tmpfs"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here (needs root with mount rights)")
    (port,) = free_ports(1)
    node = NodeProcess(port, mnt / "state", FAST, tmp_path / "node.log").start()
    try:
        node.wait_up()
        with open(mnt / "filler", "wb", buffering=0) as fh:   # fill the disk
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        deadline = time.monotonic() + 60
        while node.status()["checkpoint_failures"] < 1:
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.3)
        rc, took = _sigterm(node)
    finally:
        node.kill()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
    print(f"SIGTERM with a full state dir: exit {rc} after {took:.2f} s; {_last_line(node)}")
    assert rc != 0 and took < 5.0, node.log()
    assert "No space left" in _last_line(node) or "Errno 28" in _last_line(node), node.log()
