"""Count-sketches of SybilWall histories (protocol/SPEC.md §15.2): a fixed linear map of a flat
weight vector to `dims` values that keeps inner products in expectation, so FoolsGold's cosines
survive and sketches add up (the sketch of a sum of updates is the sum of their sketches).

Coordinate i (0-based, in state_dict order, weights only) goes to bucket `z >> (64 - log2 dims)`
with sign `+1` if `z & 1 == 0`, else `-1`, where `z = splitmix64(i)` (SPEC §15.2): every node
computes the same map without a matrix, in O(size) for any model size.
"""
from __future__ import annotations

import numpy as np

GOLDEN, M1, M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
MAX_DIMS = 1024
_CHUNK = 1 << 20          # coordinates hashed at a time (bounded temporary memory for big models)
_CACHE_SIZE = 1 << 22     # maps of models up to this many weights are kept (32 MiB of int64 at most)
_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def check_dims(dims: int) -> int:
    if not (1 <= dims <= MAX_DIMS) or dims & (dims - 1):
        raise ValueError(f"sketch dims must be a power of two in 1..{MAX_DIMS}, got {dims}")
    return dims


def splitmix64(i: np.ndarray) -> np.ndarray:
    """splitmix64's output for state i * GOLDEN (uint64 arithmetic mod 2**64)."""
    with np.errstate(over="ignore"):
        z = (i + np.uint64(1)) * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(M2)
    return z ^ (z >> np.uint64(31))


def _map(lo: int, hi: int, dims: int) -> tuple[np.ndarray, np.ndarray]:
    z = splitmix64(np.arange(lo, hi, dtype=np.uint64))
    bits = dims.bit_length() - 1
    bucket = (z >> np.uint64(64 - bits)).astype(np.int64) if bits else np.zeros(hi - lo, np.int64)
    sign = 1.0 - 2.0 * (z & np.uint64(1)).astype(np.float64)
    return bucket, sign


def sketch(vec: np.ndarray, dims: int) -> np.ndarray:
    """The count-sketch of the flat vector `vec`, float64 (dims,)."""
    check_dims(dims)
    v = np.asarray(vec, dtype=np.float64).ravel()
    n = v.size
    if n <= _CACHE_SIZE:
        key = (n, dims)
        if key not in _cache:
            _cache[key] = _map(0, n, dims)
        bucket, sign = _cache[key]
        return np.bincount(bucket, weights=v * sign, minlength=dims)
    out = np.zeros(dims)
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        bucket, sign = _map(lo, hi, dims)
        out += np.bincount(bucket, weights=v[lo:hi] * sign, minlength=dims)
    return out
