"""Datasets as numpy arrays: MNIST-1D generation (cached, no pickle), user .npz files, partitioning."""

from __future__ import annotations

import math
import os
import random
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# 10,000 samples -> 8,000 train / 2,000 test. 4,000 train samples give the CNN ~0.93 centrally;
# twice that keeps each of 8 shards big enough (1,000 samples) for ~0.9 federated. ~5 s to generate.
DEFAULT_MNIST1D_SAMPLES = 10_000
DEFAULT_MNIST1D_SEED = 42

# mnist1d reseeds the *global* numpy / random generators; serialise generation so that two
# threads cannot interleave their save/restore of that global state.
_MNIST1D_LOCK = threading.Lock()


class DataError(ValueError):
    """A dataset file or partition request is unusable (message says why)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray  # int64, (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Dataset:
        """Same test split, training split restricted to ``idx``."""
        return Dataset(self.x[idx], self.y[idx], self.x_test, self.y_test, self.num_classes, self.input_shape)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gossipnode" / "data"


def _make(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, num_classes: int | None
) -> Dataset:
    x = np.ascontiguousarray(x, dtype=np.float32)
    x_test = np.ascontiguousarray(x_test, dtype=np.float32)
    y = np.ascontiguousarray(y, dtype=np.int64)
    y_test = np.ascontiguousarray(y_test, dtype=np.int64)
    if num_classes is None:
        num_classes = int(max(y.max(initial=-1), y_test.max(initial=-1))) + 1
    return Dataset(x, y, x_test, y_test, int(num_classes), tuple(int(s) for s in x.shape[1:]))


def _generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset  # heavy import (matplotlib): only when needed

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    with _MNIST1D_LOCK:
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            raw = make_dataset(args)  # generates locally; never mnist1d's download path
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    return {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Several node processes may generate the same file at once: write a temp file, then rename.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_mnist1d(
    num_samples: int = DEFAULT_MNIST1D_SAMPLES,
    seed: int = DEFAULT_MNIST1D_SEED,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
) -> Dataset:
    """MNIST-1D generated locally with ``mnist1d.data.make_dataset`` (80/20 train/test split).

    Cached as ``mnist1d_n{num_samples}_s{seed}.npz`` in ``cache_dir`` (default: ``default_cache_dir()``).
    """
    if num_samples < 10:
        raise DataError("num_samples must be >= 10 (one per class)")
    path = Path(cache_dir or default_cache_dir()) / f"mnist1d_n{num_samples}_s{seed}.npz"
    if use_cache and path.exists():
        try:
            return load_npz(path, num_classes=10)
        except (DataError, OSError, ValueError):
            pass  # corrupt cache: regenerate and overwrite
    arrays = _generate_mnist1d(num_samples, seed)
    ds = _make(arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"], 10)
    if use_cache:
        _atomic_savez(path, {"x": ds.x, "y": ds.y, "x_test": ds.x_test, "y_test": ds.y_test})
    return ds


def load_npz(path: str | os.PathLike[str], num_classes: int | None = None) -> Dataset:
    """Load a user dataset: arrays ``x``, ``y`` and optionally ``x_test``/``y_test`` (both or neither).

    Without a test split, the test arrays are empty. ``num_classes`` comes from the argument, a
    scalar ``num_classes`` array in the file, or ``max label + 1``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if magic[:2] != b"PK":  # an .npz is a zip of .npy files
        raise DataError(f"{path}: not an .npz file (want a zip of arrays as numpy.savez writes)")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except ValueError as exc:  # object arrays need pickle: refused
        raise DataError(f"{path}: cannot load without pickle ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from exc

    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing array {key!r} (found {sorted(arrays)})")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: 'x_test' and 'y_test' must be given together")
    x, y = arrays["x"], arrays["y"]
    if "x_test" in arrays:
        x_test, y_test = arrays["x_test"], arrays["y_test"]
    else:
        x_test, y_test = np.zeros((0, *x.shape[1:]), np.float32), np.zeros(0, np.int64)

    for xn, yn, xa, ya in (("x", "y", x, y), ("x_test", "y_test", x_test, y_test)):
        if ya.ndim != 1:
            raise DataError(f"{path}: {yn!r} must be 1-D labels, got shape {ya.shape}")
        if xa.ndim < 2 and len(xa) > 0:
            raise DataError(f"{path}: {xn!r} must have shape (N, ...), got {xa.shape}")
        if len(xa) != len(ya):
            raise DataError(f"{path}: {xn!r} has {len(xa)} samples but {yn!r} has {len(ya)}")
        if not np.issubdtype(ya.dtype, np.integer):
            raise DataError(f"{path}: {yn!r} must hold integer class labels, got {ya.dtype}")
        if ya.size and ya.min() < 0:
            raise DataError(f"{path}: {yn!r} has negative labels")
        if not (np.issubdtype(xa.dtype, np.floating) or np.issubdtype(xa.dtype, np.integer)):
            raise DataError(f"{path}: {xn!r} must be numeric, got {xa.dtype}")
    if len(x) == 0:
        raise DataError(f"{path}: 'x' is empty")
    if len(x_test) and x_test.shape[1:] != x.shape[1:]:
        raise DataError(f"{path}: 'x_test' samples have shape {x_test.shape[1:]}, 'x' has {x.shape[1:]}")

    if num_classes is None and "num_classes" in arrays:
        num_classes = int(arrays["num_classes"])
    ds = _make(x, y, x_test, y_test, num_classes)
    top = int(max(ds.y.max(initial=-1), ds.y_test.max(initial=-1)))
    if top >= ds.num_classes:
        raise DataError(f"{path}: label {top} >= num_classes {ds.num_classes}")
    return ds


def _parse_scheme(scheme: str) -> tuple[str, float]:
    if scheme == "iid":
        return "iid", 0.0
    name, _, arg = scheme.partition(":")
    if name == "dirichlet":
        try:
            alpha = float(arg)
        except ValueError:
            raise DataError(f"bad partition scheme {scheme!r}: want 'dirichlet:ALPHA'") from None
        if not (alpha > 0 and math.isfinite(alpha)):
            raise DataError(f"dirichlet alpha must be > 0, got {arg}")
        return "dirichlet", alpha
    raise DataError(f"unknown partition scheme {scheme!r}: want 'iid' or 'dirichlet:ALPHA'")


def partition(y: np.ndarray, n: int, scheme: str = "iid", seed: int = 0) -> list[np.ndarray]:
    """Split sample indices into ``n`` disjoint, covering, non-empty shards (sorted int64 arrays).

    ``iid``: a seeded shuffle cut in equal parts. ``dirichlet:ALPHA``: per class, proportions
    drawn from Dir(ALPHA) over the nodes (small ALPHA = few classes per node).
    """
    kind, alpha = _parse_scheme(scheme)
    y = np.asarray(y)
    if n < 1:
        raise DataError("n must be >= 1")
    if len(y) < n:
        raise DataError(f"cannot split {len(y)} samples into {n} non-empty shards")
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), n)]

    shards: list[list[np.ndarray]] = [[] for _ in range(n)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(n, alpha))) * len(idx)).astype(int)[:-1]
        for node, part in enumerate(np.split(idx, cuts)):
            shards[node].append(part)
    out = [np.concatenate(s) for s in shards]
    # Small alpha can leave a node empty: move one sample at a time from the largest shard.
    for i in range(n):
        if len(out[i]) == 0:
            j = int(np.argmax([len(s) for s in out]))
            take = rng.integers(len(out[j]))
            out[i] = out[j][take : take + 1]
            out[j] = np.delete(out[j], take)
    return [np.sort(s).astype(np.int64) for s in out]


def shard(dataset: Dataset, i: int, n: int, scheme: str = "iid", seed: int = 0) -> Dataset:
    """Node ``i`` of ``n``: its part of the training split; the whole test split."""
    if not 0 <= i < n:
        raise DataError(f"shard index {i} out of range for {n} shards")
    return dataset.subset(partition(dataset.y, n, scheme, seed)[i])


def save_shards(
    dataset: Dataset, n: int, scheme: str, seed: int, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Write ``node_{i}.npz`` per node (train shard + whole test split + num_classes); loadable by load_npz."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = len(str(n - 1))
    paths = []
    for i, idx in enumerate(partition(dataset.y, n, scheme, seed)):
        path = out / f"node_{i:0{width}d}.npz"
        _atomic_savez(
            path,
            {
                "x": dataset.x[idx],
                "y": dataset.y[idx],
                "x_test": dataset.x_test,
                "y_test": dataset.y_test,
                "num_classes": np.asarray(dataset.num_classes, dtype=np.int64),
            },
        )
        paths.append(path)
    return paths
