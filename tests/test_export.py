"""`gossipnode export`: the checkpointed model as .safetensors and .pt, loaded back and compared."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from gossipnode.runtime import checkpoint
from gossipnode.wire.tensors import from_raw, model_hash, to_raw


def _state_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    arrays = {"features.0.weight": rng.normal(size=(25, 1, 5)).astype("f4"),
              "features.0.bias": rng.normal(size=25).astype("f4"),
              "norm.num_batches_tracked": np.array(7, dtype="i8"),
              "head.weight": rng.normal(size=(10, 3)).astype("f2")}
    model = tuple(to_raw(k, v) for k, v in arrays.items())
    d = tmp_path / "state"
    checkpoint.save(d, model, {"round": 5, "model": model_hash(model).hex(), "node_id": "abc", "network_id": "n"})
    return d, arrays


def _export(d: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gossipnode", "export", "--state-dir", str(d), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """An independent reader of the format (the `safetensors` package's, when installed)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raw = path.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        meta = header.pop("__metadata__", {})
        dt = {"F32": "<f4", "F16": "<f2", "I64": "<i8"}
        out = {k: np.frombuffer(raw[8 + n + v["data_offsets"][0]: 8 + n + v["data_offsets"][1]],
                                dt[v["dtype"]]).reshape(v["shape"]) for k, v in header.items()}
        return out, meta
    with safe_open(str(path), framework="numpy") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def test_export_safetensors_matches_the_checkpoint(tmp_path: Path) -> None:
    d, arrays = _state_dir(tmp_path)
    out = tmp_path / "model.safetensors"
    p = _export(d, out)
    assert p.returncode == 0, p.stderr
    loaded, meta = _read_safetensors(out)
    assert meta["round"] == "5" and meta["node_id"] == "abc"
    assert set(loaded) == set(arrays)
    ckpt, _ = checkpoint.load(d)
    for t in ckpt:
        np.testing.assert_array_equal(loaded[t.name], from_raw(t))
        assert loaded[t.name].dtype == arrays[t.name].dtype


def test_export_pt_loads_with_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    d, arrays = _state_dir(tmp_path)
    out = tmp_path / "model.pt"
    p = _export(d, out)
    assert p.returncode == 0, p.stderr
    state = torch.load(out, weights_only=True)
    assert set(state) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(state[k].numpy(), v)


def test_export_errors_are_one_line(tmp_path: Path) -> None:
    p = _export(tmp_path / "nothing", tmp_path / "m.safetensors")
    assert p.returncode == 2 and "--state-dir" in p.stderr and len(p.stderr.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    p = _export(tmp_path / "empty", tmp_path / "m.safetensors")
    assert p.returncode == 2 and "no usable checkpoint" in p.stderr
    d, _ = _state_dir(tmp_path)
    p = _export(d, tmp_path / "m.onnx")
    assert p.returncode == 2 and "--out" in p.stderr
