"""Tensors as they travel: raw little-endian C-order buffers with dtype and shape.

Never pickle, never tolist(): a tensor is (name, dtype string, shape, bytes). See protocol/SPEC.md.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import numpy as np

try:
    from blake3 import blake3
except ImportError as e:  # pragma: no cover - an environment set up before protocol version 3
    raise ImportError("gossipnode needs the blake3 package (wire protocol v3 hashes with BLAKE3): "
                      "rerun scripts/setup or `pip install blake3`") from e

from gossipnode.core.messages import RawTensor

# numpy dtype.str of every dtype allowed on the wire, with its item size.
DTYPES: dict[str, int] = {
    "<f4": 4, "<f2": 2, "<f8": 8, "<i8": 8, "<i4": 4, "<i2": 2, "|i1": 1, "|u1": 1, "|b1": 1,
}
FLOAT_DTYPES = frozenset({"<f2", "<f4", "<f8"})
DELTA_DTYPE = "<f4"
MAX_NAME_BYTES = 256
MAX_NDIM = 32
_DIM_LIMIT = 1 << 63
# Bound on product(shape) with every 0 dimension counted as 1. A non-empty tensor never exceeds
# it (its data is one msgpack bin, at most 2^32 - 1 bytes); an empty one with huge other
# dimensions, e.g. (0, 2^62, 2^62), would carry 0 bytes yet break numpy (and any code that
# sizes buffers from the shape), so it is malformed.
MAX_ELEMENTS = 1 << 32

MODEL_HASH_DOMAIN = b"gossipnode/model/v3\x00"
PARALLEL_HASH_MIN = 8 << 20   # buffers from this size are hashed by BLAKE3 on several threads
LEGACY_MODEL_HASH_DOMAIN = b"gossipnode/model/v1\x00"   # versions 1 and 2 (sha256 over the data)
_U16, _U32, _U64BE = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


def tensor_problem(name: object, dtype: object, shape: object, nbytes: int) -> str | None:
    """Why (name, dtype, shape, nbytes) is not a valid wire tensor, or None if it is."""
    try:
        ok = type(name) is str and len(name.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:
        ok = False
    if not ok:
        return f"tensor name must be a str of at most {MAX_NAME_BYTES} UTF-8 bytes"
    itemsize = DTYPES.get(dtype) if type(dtype) is str else None
    if itemsize is None:
        return f"tensor {name!r}: dtype {dtype!r} not allowed"
    if not isinstance(shape, tuple | list) or len(shape) > MAX_NDIM:
        return f"tensor {name!r}: shape must be a sequence of at most {MAX_NDIM} dims"
    count = 1
    span = 1  # product of the dimensions with 0 counted as 1 (bounded by MAX_ELEMENTS)
    for d in shape:
        if type(d) is not int or not 0 <= d < _DIM_LIMIT:
            return f"tensor {name!r}: bad dimension {d!r}"
        count *= d
        span *= d or 1
        if span > MAX_ELEMENTS:
            return f"tensor {name!r}: shape {tuple(shape)} spans more than {MAX_ELEMENTS} elements"
    if count * itemsize != nbytes:
        return f"tensor {name!r}: shape {tuple(shape)} x {dtype} needs {count * itemsize} bytes, got {nbytes}"
    return None


def to_raw(name: str, array: np.ndarray) -> RawTensor:
    """Encode an array; one copy (tobytes) unless a byte-order conversion is also needed."""
    array = np.asarray(array)
    target = array.dtype.newbyteorder("<")
    if target.str not in DTYPES:
        raise ValueError(f"tensor {name!r}: dtype {array.dtype} not allowed on the wire")
    if array.dtype != target:  # big-endian input only; practically never happens
        array = array.astype(target)
    raw = RawTensor(name=name, dtype=target.str, shape=tuple(int(d) for d in array.shape),
                    data=array.tobytes(order="C"))
    problem = tensor_problem(raw.name, raw.dtype, raw.shape, len(raw.data))
    if problem:
        raise ValueError(problem)
    return raw


def from_raw(tensor: RawTensor) -> np.ndarray:
    """Zero-copy view of the tensor's bytes (read-only when data is bytes)."""
    return np.frombuffer(tensor.data, dtype=np.dtype(tensor.dtype)).reshape(tensor.shape)


def leaf_digest(data: bytes | memoryview) -> bytes:
    """BLAKE3 of a tensor's data (or of any frame segment): the one pass over those bytes.
    Large buffers are hashed on all cores (BLAKE3's tree: the same digest, less wall time)."""
    if len(data) >= PARALLEL_HASH_MIN:
        return blake3(data, max_threads=blake3.AUTO).digest()
    return blake3(data).digest()


def leaf_of(t: RawTensor) -> bytes:
    """The leaf digest of t.data, computed at most once per tensor whose data cannot change.

    The digest is cached on the tensor (RawTensor.digest: not an init field, not compared), so
    the sender hashes a model's bytes once for its name and reuses that for every frame's
    signature, and a receiver reuses the digest its decoder computed for the frame signature.
    """
    d = t.digest
    if d is None:
        data = t.data
        d = leaf_digest(data)
        if type(data) is bytes or (type(data) is memoryview and data.readonly):
            object.__setattr__(t, "digest", d)   # a cache of a pure function of immutable bytes
    return d


def _tensor_head(t: RawTensor) -> bytes:
    name = t.name.encode("utf-8")
    dtype = t.dtype.encode("ascii")
    head = [_U16.pack(len(name)), name, bytes((len(dtype),)), dtype, bytes((len(t.shape),))]
    head += [_U64BE.pack(d) for d in t.shape]
    head.append(_U64BE.pack(len(t.data)))
    return b"".join(head)


def model_hash(tensors: Sequence[RawTensor]) -> bytes:
    """BLAKE3 content address of a model; framing in protocol/SPEC.md "Model hash".

    Each tensor's data enters as its 32-byte leaf digest (leaf_of), so a model received in a
    frame is named without a second pass over its bytes.
    """
    h = blake3(MODEL_HASH_DOMAIN + _U32.pack(len(tensors)))
    for t in tensors:
        h.update(_tensor_head(t))
        h.update(leaf_of(t))
    return h.digest()


def legacy_model_hash(tensors: Sequence[RawTensor]) -> bytes:
    """The sha256 model hash of protocol versions 1 and 2 (checkpoints written by those nodes)."""
    h = hashlib.sha256()
    h.update(LEGACY_MODEL_HASH_DOMAIN + _U32.pack(len(tensors)))
    for t in tensors:
        h.update(_tensor_head(t))
        h.update(memoryview(t.data))
    return h.digest()


def make_delta(model: Sequence[RawTensor], base: Sequence[RawTensor]) -> tuple[tuple[RawTensor, ...], bytes]:
    """Delta tensors (model - base, float32) and the hash the receiver will reconstruct.

    Float arithmetic does not round-trip exactly ((m - b) + b != m in general), so a delta MODEL
    must be named by the hash of apply_delta(base, delta), which this returns.
    """
    if len(model) != len(base):
        raise ValueError("model and base have different tensor counts")
    out = []
    for m, b in zip(model, base, strict=True):
        if (m.name, m.dtype, tuple(m.shape)) != (b.name, b.dtype, tuple(b.shape)):
            raise ValueError(f"tensor {m.name!r} does not match base tensor {b.name!r}")
        if m.dtype in FLOAT_DTYPES:
            d = from_raw(m).astype(np.float32) - from_raw(b).astype(np.float32)
            out.append(to_raw(m.name, d))
        else:  # integer/bool buffers travel whole (a float32 difference would lose them)
            out.append(m)
    delta = tuple(out)
    return delta, model_hash(apply_delta(base, delta))


def apply_delta(base: Sequence[RawTensor], delta: Sequence[RawTensor]) -> tuple[RawTensor, ...]:
    """Reconstruct a model: float tensors as (float32(base) + delta) cast to base's dtype,
    other tensors replaced by the delta's value. Raises ValueError on mismatch."""
    if len(base) != len(delta):
        raise ValueError("base and delta have different tensor counts")
    out = []
    for b, d in zip(base, delta, strict=True):
        if d.name != b.name or tuple(d.shape) != tuple(b.shape):
            raise ValueError(f"delta tensor {d.name!r} does not match base tensor {b.name!r}")
        if b.dtype in FLOAT_DTYPES:
            if d.dtype != DELTA_DTYPE:
                raise ValueError(f"delta tensor {d.name!r} must be {DELTA_DTYPE}")
            s = from_raw(b).astype(np.float32) + from_raw(d)
            out.append(to_raw(b.name, s.astype(np.dtype(b.dtype), copy=False)))
        else:
            if d.dtype != b.dtype:
                raise ValueError(f"delta tensor {d.name!r} must have dtype {b.dtype}")
            out.append(d)
    return tuple(out)
