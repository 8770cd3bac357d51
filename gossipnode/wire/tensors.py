"""Tensors as they travel: raw little-endian C-order buffers with dtype and shape.

Never pickle, never tolist(): a tensor is (name, dtype string, shape, bytes). See protocol/SPEC.md.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Protocol

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
# Compressed delta encodings (SPEC section 5.1): valid only as the delta of a float base tensor.
# `data` is not product(shape) x itemsize; each layout fixes how its length follows from its header.
Q8 = "q8"        # u32le block || f32le scale[ceil(n / block)] || i8 q[n];  value = q * scale[i // block]
TOPK = "topk"    # u32le k || u32le index[k] (strictly increasing, < n) || f32le value[k]; others 0
ENCODED_DTYPES = frozenset({Q8, TOPK})
DELTA_DTYPES = frozenset({DELTA_DTYPE, "<f2", Q8, TOPK})   # what a float base tensor's delta may be
Q8_MAX_BLOCK = 1 << 16
BAD_ENCODING = "bad_encoding"   # the node's rejection reason for an EncodingError
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
_U32LE = struct.Struct("<I")


def tensor_problem(name: object, dtype: object, shape: object, nbytes: int) -> str | None:
    """Why (name, dtype, shape, nbytes) is not a valid wire tensor, or None if it is."""
    try:
        ok = type(name) is str and len(name.encode("utf-8")) <= MAX_NAME_BYTES
    except UnicodeEncodeError:
        ok = False
    if not ok:
        return f"tensor name must be a str of at most {MAX_NAME_BYTES} UTF-8 bytes"
    itemsize = DTYPES.get(dtype) if type(dtype) is str else None
    encoded = type(dtype) is str and dtype in ENCODED_DTYPES
    if itemsize is None and not encoded:
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
    if encoded:
        return _encoded_size_problem(name, dtype, count, nbytes)
    if count * itemsize != nbytes:
        return f"tensor {name!r}: shape {tuple(shape)} x {dtype} needs {count * itemsize} bytes, got {nbytes}"
    return None


def _encoded_size_problem(name: str, dtype: str, count: int, nbytes: int) -> str | None:
    """Length checks of a compressed tensor that need no look at its bytes (SPEC section 5.1)."""
    if dtype == Q8:
        blocks, rest = divmod(nbytes - 4 - count, 4)
        if nbytes < 4 + count or rest or blocks > count or (count > 0) != (blocks > 0):
            return f"tensor {name!r}: {nbytes} bytes cannot be a q8 tensor of {count} values"
    else:  # TOPK
        k, rest = divmod(nbytes - 4, 8)
        if nbytes < 4 or rest or k > count:
            return f"tensor {name!r}: {nbytes} bytes cannot be a topk tensor of {count} values"
    return None


class EncodingError(ValueError):
    """A compressed delta tensor whose bytes break its layout (SPEC section 5.1). `code` says which
    rule: size, block_size, scale, k, indices, value."""

    reason = BAD_ENCODING

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def _count(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def encode_q8(name: str, values: np.ndarray, block: int) -> RawTensor:
    """int8 with one float32 scale (max |value| / 127) per `block` consecutive values."""
    if not 1 <= block <= Q8_MAX_BLOCK:
        raise ValueError(f"q8 block must be in [1, {Q8_MAX_BLOCK}], got {block}")
    v = np.ascontiguousarray(values, dtype=np.float32).ravel()
    if not np.isfinite(v).all():
        raise ValueError(f"tensor {name!r}: cannot quantise non-finite values")
    n = v.size
    nb = -(-n // block)
    padded = np.zeros(nb * block, np.float32)
    padded[:n] = v
    scale = (np.abs(padded.reshape(nb, block)).max(axis=1) / 127).astype(np.float32)
    safe = np.where(scale > 0, scale, 1).astype(np.float32)
    q = np.clip(np.rint(padded.reshape(nb, block) / safe[:, None]), -127, 127).astype(np.int8).ravel()[:n]
    data = _U32LE.pack(block) + scale.astype("<f4").tobytes() + q.tobytes()
    return RawTensor(name, Q8, tuple(int(d) for d in np.shape(values)), data)


def encode_topk(name: str, shape: Sequence[int], indices: np.ndarray, values: np.ndarray) -> RawTensor:
    """The values at `indices` (flat C-order, strictly increasing); every other value is 0."""
    idx = np.asarray(indices, dtype=np.int64).ravel()
    val = np.ascontiguousarray(values, dtype=np.float32).ravel()
    n = _count(shape)
    if idx.size != val.size or (idx.size and (idx[0] < 0 or idx[-1] >= n or (np.diff(idx) <= 0).any())):
        raise ValueError(f"tensor {name!r}: topk indices must be strictly increasing and below {n}")
    if not np.isfinite(val).all():
        raise ValueError(f"tensor {name!r}: topk values must be finite")
    data = _U32LE.pack(idx.size) + idx.astype("<u4").tobytes() + val.astype("<f4").tobytes()
    return RawTensor(name, TOPK, tuple(int(d) for d in shape), data)


def decode_values(t: RawTensor) -> np.ndarray:
    """A delta tensor's values as float32 of its shape: `<f4` (zero-copy), `<f2`, `q8` or `topk`.

    Every peer-given field is bounded before anything is allocated from it; raises EncodingError.
    The result has product(shape) elements: callers check the shape against the base first, so a
    small tensor cannot make a large allocation that the receiver's own model does not already have.
    """
    if t.dtype == DELTA_DTYPE:
        return from_raw(t)
    problem = tensor_problem(t.name, t.dtype, t.shape, len(t.data))
    if problem:
        raise EncodingError("size", problem)
    n = _count(t.shape)
    buf = memoryview(t.data)
    if t.dtype == "<f2":
        out = np.frombuffer(buf, "<f2").astype(np.float32)
        if not np.isfinite(out).all():
            raise EncodingError("value", f"tensor {t.name!r}: float16 delta holds a NaN or an infinity")
        return out.reshape(t.shape)
    if t.dtype == Q8:
        (block,) = _U32LE.unpack_from(buf, 0)
        nb = (len(buf) - 4 - n) // 4
        if not 1 <= block <= Q8_MAX_BLOCK:
            raise EncodingError("block_size", f"tensor {t.name!r}: q8 block {block} not in [1, {Q8_MAX_BLOCK}]")
        if -(-n // block) != nb:
            raise EncodingError("block_size", f"tensor {t.name!r}: {nb} q8 scales for {n} values in blocks of {block}")
        scale = np.frombuffer(buf, "<f4", nb, 4)
        if not (np.isfinite(scale).all() and (scale >= 0).all()):
            raise EncodingError("scale", f"tensor {t.name!r}: q8 scales must be finite and >= 0")
        q = np.frombuffer(buf, np.int8, n, 4 + 4 * nb)
        if n and q.min() < -127:
            raise EncodingError("value", f"tensor {t.name!r}: q8 value -128 (the range is -127..127)")
        return (q.astype(np.float32) * np.repeat(scale, block)[:n]).reshape(t.shape)
    if t.dtype == TOPK:
        (k,) = _U32LE.unpack_from(buf, 0)
        if k != (len(buf) - 4) // 8:
            raise EncodingError("k", f"tensor {t.name!r}: topk k = {k} but {(len(buf) - 4) // 8} entries sent")
        idx = np.frombuffer(buf, "<u4", k, 4)
        val = np.frombuffer(buf, "<f4", k, 4 + 4 * k)
        if k and (int(idx[-1]) >= n or (np.diff(idx.astype(np.int64)) <= 0).any()):
            raise EncodingError("indices", f"tensor {t.name!r}: topk indices must be strictly increasing and below {n}")
        if not np.isfinite(val).all():
            raise EncodingError("value", f"tensor {t.name!r}: topk values must be finite")
        out = np.zeros(n, np.float32)
        out[idx] = val
        return out.reshape(t.shape)
    raise EncodingError("size", f"tensor {t.name!r}: dtype {t.dtype!r} is not a delta encoding")


def decoded_delta(delta: Sequence[RawTensor]) -> tuple[RawTensor, ...]:
    """The delta with every compressed tensor decoded to `<f4` (for code that wants arrays)."""
    return tuple(to_raw(d.name, decode_values(d)) if d.dtype in ENCODED_DTYPES or d.dtype == "<f2"
                 else d for d in delta)


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
    """Zero-copy view of the tensor's bytes (read-only when data is bytes). Raises ValueError for
    a compressed encoding (those are decoded by decode_values, against a base)."""
    if tensor.dtype in ENCODED_DTYPES:
        raise ValueError(f"tensor {tensor.name!r}: {tensor.dtype} is a delta encoding, not an array")
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


class DeltaCompressor(Protocol):
    """What make_delta needs of a compressor (learn/compress.py): float32 deltas by tensor name ->
    wire tensors of the same names (dtype `<f4`, `<f2`, `q8` or `topk`)."""

    def compress(self, deltas: Mapping[str, np.ndarray]) -> Mapping[str, RawTensor]: ...


def make_delta(model: Sequence[RawTensor], base: Sequence[RawTensor],
               compressor: DeltaCompressor | None = None) -> tuple[tuple[RawTensor, ...], bytes]:
    """Delta tensors (model - base, float32) and the hash the receiver will reconstruct.

    Float arithmetic does not round-trip exactly ((m - b) + b != m in general), so a delta MODEL
    must be named by the hash of apply_delta(base, delta), which this returns. With a
    `compressor` (learn/compress.py) the float deltas travel compressed, and the hash is that of
    the lossy reconstruction: the model every receiver (and the sender) will hold.
    """
    if len(model) != len(base):
        raise ValueError("model and base have different tensor counts")
    out = []
    for m, b in zip(model, base, strict=True):
        if (m.name, m.dtype, tuple(m.shape)) != (b.name, b.dtype, tuple(b.shape)):
            raise ValueError(f"tensor {m.name!r} does not match base tensor {b.name!r}")
        if m.dtype in FLOAT_DTYPES:
            d = from_raw(m).astype(np.float32) - from_raw(b).astype(np.float32)
            out.append(d if compressor is not None else to_raw(m.name, d))
        else:  # integer/bool buffers travel whole (a float32 difference would lose them)
            out.append(m)
    if compressor is not None:
        floats = {m.name: d for m, d in zip(model, out, strict=True) if not isinstance(d, RawTensor)}
        encoded = compressor.compress(floats)
        out = [encoded[m.name] if m.name in floats else d for m, d in zip(model, out, strict=True)]
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
            if d.dtype not in DELTA_DTYPES:
                raise ValueError(f"delta tensor {d.name!r} must be one of {sorted(DELTA_DTYPES)}")
            s = from_raw(b).astype(np.float32) + decode_values(d)
            out.append(to_raw(b.name, s.astype(np.dtype(b.dtype), copy=False)))
        else:
            if d.dtype != b.dtype:
                raise ValueError(f"delta tensor {d.name!r} must have dtype {b.dtype}")
            out.append(d)
    return tuple(out)
