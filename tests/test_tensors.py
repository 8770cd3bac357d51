"""wire/tensors: raw tensor encoding, model hash framing, delta reconstruction."""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from blake3 import blake3

from gossipnode.core.messages import RawTensor
from gossipnode.wire.tensors import (
    DTYPES,
    apply_delta,
    from_raw,
    leaf_of,
    legacy_model_hash,
    make_delta,
    model_hash,
    to_raw,
)

ALLOWED = [np.float32, np.float16, np.float64, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]


@pytest.mark.parametrize("dt", ALLOWED)
def test_round_trip_all_dtypes(dt: type) -> None:
    a = (np.arange(24).reshape(2, 3, 4) % 2).astype(dt)
    t = to_raw("x", a)
    assert t.dtype in DTYPES and t.shape == (2, 3, 4) and isinstance(t.data, bytes)
    b = from_raw(t)
    assert b.dtype == a.dtype and np.array_equal(a, b)


def test_to_raw_normalises_layout_and_byte_order() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = to_raw("t", a.T)  # non-contiguous
    assert np.array_equal(from_raw(t), a.T)
    big = a.astype(">f4")
    tb = to_raw("b", big)
    assert tb.dtype == "<f4" and tb.data == a.tobytes()
    assert to_raw("s", np.array(2.5)).shape == ()
    assert to_raw("z", np.zeros((0, 5), np.int8)).data == b""


def test_from_raw_is_zero_copy() -> None:
    t = to_raw("x", np.ones(1000, np.float32))
    arr = from_raw(t)
    assert not arr.flags.owndata and not arr.flags.writeable
    assert np.shares_memory(arr, np.frombuffer(t.data, np.uint8))


@pytest.mark.parametrize("dt", [np.uint16, np.uint32, np.uint64, np.complex64, object, "U3"])
def test_disallowed_dtypes(dt: object) -> None:
    with pytest.raises(ValueError):
        to_raw("x", np.zeros(2, dtype=dt))


def _reference_hash(tensors: list[RawTensor], legacy: bool = False) -> bytes:
    """Direct transcription of SPEC.md "Model hash", built as one buffer (legacy: versions 1-2)."""
    out = (b"gossipnode/model/v1\x00" if legacy else b"gossipnode/model/v3\x00") + struct.pack(">I", len(tensors))
    for t in tensors:
        name = t.name.encode()
        out += struct.pack(">H", len(name)) + name + bytes([len(t.dtype)]) + t.dtype.encode()
        out += bytes([len(t.shape)]) + b"".join(struct.pack(">Q", d) for d in t.shape)
        out += struct.pack(">Q", len(t.data)) + (t.data if legacy else blake3(t.data).digest())
    return hashlib.sha256(out).digest() if legacy else blake3(out).digest()


def test_model_hash_matches_spec_framing_and_is_sensitive() -> None:
    ts = [to_raw("a.w", np.arange(6, dtype=np.float32).reshape(2, 3)), to_raw("é", np.array([1, 2], np.int64))]
    h = model_hash(ts)
    assert h == _reference_hash(ts) and len(h) == 32
    variants = [
        ts[::-1],
        [RawTensor("a.x", *(ts[0].dtype, ts[0].shape, ts[0].data)), ts[1]],
        [RawTensor("a.w", "<i4", ts[0].shape, ts[0].data), ts[1]],
        [RawTensor("a.w", "<f4", (3, 2), ts[0].data), ts[1]],
        [RawTensor("a.w", "<f4", (6,), ts[0].data), ts[1]],
        [to_raw("a.w", np.arange(1, 7, dtype=np.float32).reshape(2, 3)), ts[1]],
        ts[:1],
    ]
    assert len({h, *(model_hash(v) for v in variants)}) == len(variants) + 1


def test_model_hash_large_model_incremental() -> None:
    big = [to_raw(f"l{i}", np.full(2_500_000, i, np.float32)) for i in range(4)]  # 40 MB
    assert model_hash(big) == _reference_hash(big)
    assert legacy_model_hash(big) == _reference_hash(big, legacy=True)


def test_leaf_digest_is_cached_only_for_immutable_data() -> None:
    t = to_raw("x", np.arange(10, dtype=np.float32))
    assert t.digest is None
    assert leaf_of(t) == blake3(t.data).digest() == t.digest   # bytes: cached
    from dataclasses import replace
    u = replace(t, data=np.zeros(10, np.float32).tobytes())
    assert u.digest is None and model_hash([u]) != model_hash([t])   # replace() never carries it over
    assert u == RawTensor("x", "<f4", (10,), bytes(40))   # the cache is not part of equality
    buf = bytearray(t.data)
    w = RawTensor("x", "<f4", (10,), memoryview(buf))   # writable: never cached
    leaf_of(w)
    assert w.digest is None
    buf[0] ^= 1
    assert leaf_of(w) != leaf_of(t)


def test_delta_round_trip_names_reconstructed_model() -> None:
    rng = np.random.default_rng(0)
    base = (to_raw("w", rng.standard_normal((50, 20), dtype=np.float32)),
            to_raw("h", rng.standard_normal(7).astype(np.float16)),
            to_raw("n", np.array(10, np.int64)))
    model = (to_raw("w", from_raw(base[0]) + rng.standard_normal((50, 20), dtype=np.float32) * 1e-3),
             to_raw("h", (from_raw(base[1]) + 1).astype(np.float16)),
             to_raw("n", np.array(11, np.int64)))
    delta, h = make_delta(model, base)
    assert [t.dtype for t in delta] == ["<f4", "<f4", "<i8"]
    rebuilt = apply_delta(base, delta)
    assert model_hash(rebuilt) == h
    assert [t.dtype for t in rebuilt] == [t.dtype for t in model]
    assert np.allclose(from_raw(rebuilt[0]), from_raw(model[0]), atol=1e-6)
    assert from_raw(rebuilt[2]) == 11
    with pytest.raises(ValueError):
        apply_delta(base, delta[:2])
    with pytest.raises(ValueError):
        apply_delta(base, (to_raw("w", np.zeros((50, 20), np.float64)), *delta[1:]))
    with pytest.raises(ValueError):
        make_delta(model, base[::-1])


def test_shape_span_bounded_even_when_empty() -> None:
    from gossipnode.wire.tensors import MAX_ELEMENTS, tensor_problem
    too_many = f"spans more than {MAX_ELEMENTS} elements"
    big = MAX_ELEMENTS + 1
    assert tensor_problem("t", "<f4", (0, 2**62, 2**62), 0) == f"tensor 't': shape (0, {2**62}, {2**62}) {too_many}"
    assert tensor_problem("t", "|u1", (0, big), 0) == f"tensor 't': shape (0, {big}) {too_many}"
    assert tensor_problem("t", "|u1", (2**20,) * 32, 0).endswith(too_many)  # no overflow, just rejected
    assert tensor_problem("t", "|u1", (0, MAX_ELEMENTS), 0) is None   # exactly the bound: fine
    assert tensor_problem("t", "<f4", (0, 3, 4), 0) is None
    assert tensor_problem("t", "<f4", (3, 4), 48) is None
    # numpy can view every shape that passes
    np.frombuffer(b"", np.float32).reshape((0, MAX_ELEMENTS))


def test_checkpoint_named_by_the_v2_sha256_model_hash_still_loads(tmp_path) -> None:
    from gossipnode.runtime import checkpoint
    m = (to_raw("w", np.arange(6, dtype=np.float32).reshape(2, 3)), to_raw("n", np.array(3, np.int64)))
    checkpoint.save(tmp_path, m, {"round": 4, "model": legacy_model_hash(m).hex()})   # written by a v2 node
    loaded = checkpoint.load(tmp_path)
    assert loaded is not None and loaded[0] == m
    checkpoint.save(tmp_path, m, {"round": 5, "model": "00" * 32})   # a wrong name is still refused
    (tmp_path / checkpoint.PREV_META_FILE).unlink()
    assert checkpoint.load(tmp_path) is None
