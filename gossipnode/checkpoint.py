"""Atomic checkpoints of a node's model and counters in its state dir (npz + json, no pickle)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .core.messages import RawTensor
from .wire.tensors import from_raw, to_raw

MODEL_FILE = "checkpoint.npz"
META_FILE = "checkpoint.json"


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(state_dir: str | Path, model: tuple[RawTensor, ...], meta: dict[str, Any]) -> None:
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {f"t{i}": from_raw(t) for i, t in enumerate(model)}
    names = [t.name for t in model]
    _atomic_write(d / MODEL_FILE, lambda fh: np.savez(fh, **arrays))
    # The json names the model file's tensors; written second so a torn pair is detected.
    _atomic_write(d / META_FILE, lambda fh: fh.write(json.dumps(meta | {"tensors": names}).encode()))


def load(state_dir: str | Path) -> tuple[tuple[RawTensor, ...], dict[str, Any]] | None:
    d = Path(state_dir)
    if not (d / MODEL_FILE).exists() or not (d / META_FILE).exists():
        return None
    meta = json.loads((d / META_FILE).read_text())
    with np.load(d / MODEL_FILE, allow_pickle=False) as z:
        names = meta["tensors"]
        if len(names) != len(z.files):
            raise ValueError("checkpoint model and metadata disagree")
        model = tuple(to_raw(n, z[f"t{i}"]) for i, n in enumerate(names))
    return model, meta
