"""Atomic, verified checkpoints of a node's model and counters in its state dir (npz + json, no pickle).

Layout (format 2):

* ``checkpoint-<first 16 hex of sha256>.npz``: the tensors; a new name for every new content,
  so writing one never overwrites the file a committed checkpoint names;
* ``checkpoint.json``: the commit record: counters, the tensors' names, the npz file's name,
  size and SHA-256, and (from the node) the model hash;
* ``checkpoint.prev.json``: the previous commit record (one previous generation is kept, with
  its npz).

A save writes the npz (fsync), then copies the current record to the previous one, then replaces
the current record (each atomic), then removes npz files neither record names. A crash at any
point leaves the current or the previous generation intact. `load` verifies the record's SHA-256
of the npz and the model hash and falls back to the previous generation when the current one is
torn or corrupt (a missing or truncated file, a wrong hash, unreadable JSON), or returns None
(start fresh, with a warning) when neither is usable. Format 1 (``checkpoint.npz`` +
``checkpoint.json`` without a hash) is still read.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gossipnode.core.messages import RawTensor
from gossipnode.wire.tensors import from_raw, legacy_model_hash, model_hash, to_raw

log = logging.getLogger(__name__)

FORMAT = 2
LEGACY_MODEL_FILE = "checkpoint.npz"
MODEL_FILE = LEGACY_MODEL_FILE   # the name format 1 used (kept for callers)
META_FILE = "checkpoint.json"
PREV_META_FILE = "checkpoint.prev.json"
_NPZ_PREFIX = "checkpoint-"


class CheckpointError(ValueError):
    """A checkpoint generation is missing, torn or corrupt."""


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path.name} is missing") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path.name} is unreadable: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("tensors"), list):
        raise CheckpointError(f"{path.name} is not a checkpoint record")
    return meta


def _referenced(d: Path) -> set[str]:
    names = set()
    for m in (META_FILE, PREV_META_FILE):
        try:
            f = json.loads((d / m).read_bytes()).get("file", LEGACY_MODEL_FILE)
            if isinstance(f, str):
                names.add(f)
        except (OSError, ValueError, AttributeError):
            pass
    return names


def _cleanup(d: Path, keep: set[str]) -> None:
    for p in d.glob(f"{_NPZ_PREFIX}*.npz"):
        if p.name not in keep:
            p.unlink(missing_ok=True)
    if LEGACY_MODEL_FILE not in keep:
        (d / LEGACY_MODEL_FILE).unlink(missing_ok=True)


def save(state_dir: str | Path, model: tuple[RawTensor, ...], meta: dict[str, Any]) -> None:
    """Commit a new checkpoint generation; raises OSError (read-only or full disk, ...) and then
    leaves the committed generations as they were."""
    d = Path(state_dir)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {f"t{i}": from_raw(t) for i, t in enumerate(model)}
    names = [t.name for t in model]
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".checkpoint.", suffix=".npz")
    new_file = None
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        sha = _sha256_file(Path(tmp))
        new_file = f"{_NPZ_PREFIX}{sha[:16]}.npz"
        size = os.path.getsize(tmp)
        os.replace(tmp, d / new_file)
        # Keep the current generation as the previous one, if its npz is (still) there whole.
        cur = d / META_FILE
        try:
            old = cur.read_bytes()
            om = json.loads(old)
            of = d / om.get("file", LEGACY_MODEL_FILE)
            if of.is_file() and ("size" not in om or of.stat().st_size == om["size"]):
                _atomic_write(d / PREV_META_FILE, lambda fh: fh.write(old))
        except (FileNotFoundError, ValueError, AttributeError, TypeError):
            pass
        record = meta | {"format": FORMAT, "tensors": names, "file": new_file, "size": size, "sha256": sha}
        _atomic_write(cur, lambda fh: fh.write(json.dumps(record, allow_nan=False).encode()))
        _fsync_dir(d)
    finally:
        Path(tmp).unlink(missing_ok=True)
        try:  # whatever happened, drop npz files no record names (a failed save leaves none)
            _cleanup(d, _referenced(d))
        except OSError:
            pass


def _load_one(d: Path, meta_name: str) -> tuple[tuple[RawTensor, ...], dict[str, Any]]:
    meta = _read_meta(d / meta_name)
    file = meta.get("file", LEGACY_MODEL_FILE)
    if not isinstance(file, str) or "/" in file or file.startswith("."):
        raise CheckpointError(f"{meta_name} names a bad model file {file!r}")
    path = d / file
    if not path.is_file():
        raise CheckpointError(f"{meta_name} names {file}, which is missing")
    if "sha256" in meta:
        if _sha256_file(path) != meta["sha256"]:
            raise CheckpointError(f"{file} does not match the hash in {meta_name} (torn or corrupt)")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = meta["tensors"]
            if len(names) != len(z.files):
                raise CheckpointError(f"{file} and {meta_name} disagree (torn checkpoint)")
            model = tuple(to_raw(n, z[f"t{i}"]) for i, n in enumerate(names))
    except CheckpointError:
        raise
    except Exception as e:  # zipfile/numpy errors of a truncated or garbled file
        raise CheckpointError(f"{file} is unreadable: {type(e).__name__}: {e}") from None
    want = meta.get("model")
    # a checkpoint written before protocol version 3 names its model by the sha256 model hash
    if isinstance(want, str) and want not in (model_hash(model).hex(), legacy_model_hash(model).hex()):
        raise CheckpointError(f"{file} holds another model than {meta_name} names (torn checkpoint)")
    return model, meta


def load(state_dir: str | Path) -> tuple[tuple[RawTensor, ...], dict[str, Any]] | None:
    """The newest verified generation, or None (no checkpoint, or none usable: start fresh)."""
    d = Path(state_dir)
    if not any((d / m).exists() for m in (META_FILE, PREV_META_FILE)):
        return None
    problems = []
    for meta_name in (META_FILE, PREV_META_FILE):
        if not (d / meta_name).exists() and meta_name == PREV_META_FILE:
            break
        try:
            model, meta = _load_one(d, meta_name)
        except CheckpointError as e:
            problems.append(str(e))
            log.warning("checkpoint in %s not usable: %s", d, e)
            continue
        if problems:
            log.warning("using the previous checkpoint generation (round %s)", meta.get("round"))
        return model, meta
    log.warning("no usable checkpoint in %s (%s); starting fresh", d, "; ".join(problems))
    return None
