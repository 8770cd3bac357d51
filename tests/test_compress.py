"""Compressed updates (learn/compress.py, wire/tensors.py encodings): round trips, error feedback,
malformed payloads (every peer-given field bounded), and the flag's validation."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from gossipnode.learn.compress_names import CompressSpec, parse_compress
from gossipnode.core.messages import ModelKind, ModelMsg, RawTensor
from gossipnode.learn.compress import Compressor, make_compressor
from gossipnode.wire import Identity, WireError, decode, encode
from gossipnode.wire.tensors import (
    Q8,
    TOPK,
    EncodingError,
    apply_delta,
    decode_values,
    decoded_delta,
    encode_q8,
    encode_topk,
    from_raw,
    make_delta,
    model_hash,
    tensor_problem,
    to_raw,
)

SPECS = ["f16", "int8", "topk:0.1"]


def _deltas(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"conv.weight": rng.standard_normal((8, 4, 5)).astype(np.float32) * 0.01,
            "fc.weight": rng.standard_normal((10, 33)).astype(np.float32) * 0.02,
            "fc.bias": rng.standard_normal(10).astype(np.float32) * 0.001}


def test_parse_compress() -> None:
    assert parse_compress("none") == CompressSpec("none") == parse_compress(None)
    assert parse_compress("F16").kind == "f16" and parse_compress("int8").block == 256
    assert parse_compress("topk:0.02") == CompressSpec("topk", 0.02)
    assert str(parse_compress("topk:0.02")) == "topk:0.02"
    for bad in ("gzip", "topk", "topk:0", "topk:1.5", "topk:nan", "topk:x", "f16:1", "int8:4", "topk:-0.1"):
        with pytest.raises(ValueError):
            parse_compress(bad)
    assert make_compressor("none") is None


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_and_residual_is_exactly_what_was_dropped(spec: str) -> None:
    d = _deltas()
    c = Compressor(spec)
    enc = c.compress(d)
    assert set(enc) == set(d)
    for name, t in enc.items():
        dec = decode_values(t)
        assert dec.shape == d[name].shape and dec.dtype == np.float32
        np.testing.assert_allclose(dec + c.residual[name], d[name], rtol=0, atol=1e-7)
        assert tensor_problem(t.name, t.dtype, t.shape, len(t.data)) is None
    # lossy, but not wildly so
    err = sum(float(np.linalg.norm(c.residual[n])) for n in d)
    norm = sum(float(np.linalg.norm(d[n])) for n in d)
    assert 0 < err < (0.99 if spec.startswith("topk") else 0.01) * norm


def test_sizes() -> None:
    d = _deltas()
    n = sum(v.size for v in d.values())
    dense = 4 * n
    f16 = sum(len(t.data) for t in Compressor("f16").compress(d).values())
    q8 = sum(len(t.data) for t in Compressor("int8").compress(d).values())
    tk = Compressor("topk:0.05").compress(d)
    k = sum(struct.unpack_from("<I", t.data)[0] for t in tk.values())
    assert f16 == dense // 2
    assert q8 == sum(4 + 4 * -(-v.size // 256) + v.size for v in d.values()) < dense / 3.5
    assert k == int(np.ceil(0.05 * n)) and sum(len(t.data) for t in tk.values()) == 8 * k + 4 * len(d)


def test_topk_picks_the_largest_over_the_whole_model() -> None:
    d = {"a": np.array([0.0, 5.0, -0.1, 0.2], np.float32), "b": np.array([[-7.0, 0.3], [0.0, 1.0]], np.float32)}
    enc = Compressor("topk:0.25").compress(d)   # k = 2 of 8: -7 (b) and 5 (a)
    assert np.array_equal(decode_values(enc["a"]), [0, 5, 0, 0])
    assert np.array_equal(decode_values(enc["b"]), [[-7, 0], [0, 0]])


@pytest.mark.parametrize("spec", SPECS)
def test_error_feedback_loses_nothing_over_rounds(spec: str) -> None:
    """Sum of what was sent over many rounds + the final residual == sum of the true updates, and
    the residual stays bounded (it is re-sent, not accumulated forever)."""
    c = Compressor(spec)
    true_sum = {n: np.zeros_like(v) for n, v in _deltas().items()}
    sent_sum = {n: np.zeros_like(v) for n, v in _deltas().items()}
    for r in range(40):
        d = _deltas(r)
        for n, v in d.items():
            true_sum[n] += v
        for n, t in c.compress(d).items():
            sent_sum[n] += decode_values(t)
    for n in true_sum:
        np.testing.assert_allclose(sent_sum[n] + c.residual[n], true_sum[n], atol=1e-5)
    one = sum(float(np.linalg.norm(v)) for v in _deltas().values())
    assert c.residual_norm() < 5 * one
    # without error feedback the top-k loss grows with the number of rounds
    if spec.startswith("topk"):
        c2 = Compressor(spec, error_feedback=False)
        lost = {n: np.zeros_like(v) for n, v in true_sum.items()}
        for r in range(40):
            for n, t in c2.compress(_deltas(r)).items():
                lost[n] += decode_values(t)
        gap_nofb = sum(float(np.linalg.norm(true_sum[n] - lost[n])) for n in true_sum)
        gap_fb = sum(float(np.linalg.norm(true_sum[n] - sent_sum[n])) for n in true_sum)
        assert gap_fb < 0.5 * gap_nofb
        assert c2.residual == {}


@pytest.mark.parametrize("spec", SPECS)
def test_make_delta_names_the_lossy_reconstruction(spec: str) -> None:
    rng = np.random.default_rng(1)
    base = (to_raw("w", rng.standard_normal((20, 30), dtype=np.float32)),
            to_raw("h", rng.standard_normal(7).astype(np.float16)),
            to_raw("n", np.array(10, np.int64)))
    model = (to_raw("w", from_raw(base[0]) + rng.standard_normal((20, 30), dtype=np.float32) * 1e-2),
             to_raw("h", (from_raw(base[1]) + 0.5).astype(np.float16)),
             to_raw("n", np.array(11, np.int64)))
    c = Compressor(spec)
    delta, h = make_delta(model, base, c)
    assert delta[2] == model[2] and delta[0].dtype == {"f16": "<f2", "int8": Q8}.get(spec, TOPK)
    rebuilt = apply_delta(base, delta)
    assert model_hash(rebuilt) == h                      # the receiver's reconstruction
    assert h != make_delta(model, base)[1]               # not the uncompressed model
    assert [t.dtype for t in rebuilt] == ["<f4", "<f2", "<i8"]
    assert all(t.dtype in ("<f4", "<i8") for t in decoded_delta(delta))
    # what the receiver rebuilt + the residual is the trained model (float32 weights)
    np.testing.assert_allclose(from_raw(rebuilt[0]) + c.residual["w"], from_raw(model[0]), atol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_compressed_delta_survives_the_codec(spec: str) -> None:
    ident = Identity.from_seed(b"\x05" * 32)
    base = (to_raw("w", np.zeros((16, 16), np.float32)),)
    model = (to_raw("w", np.random.default_rng(2).standard_normal((16, 16)).astype(np.float32)),)
    delta, h = make_delta(model, base, Compressor(spec))
    msg = ModelMsg(3, ModelKind.TRAINED, h, (), model_hash(base), delta)
    env = decode(encode(ident, "net", 1, 1.0, msg), "net", 1 << 20)
    assert env.msg.tensors[0].dtype == delta[0].dtype
    assert model_hash(apply_delta(base, env.msg.tensors)) == h


def _q8(block: int, scales: list[float], q: list[int], shape: tuple[int, ...]) -> RawTensor:
    data = struct.pack("<I", block) + np.array(scales, "<f4").tobytes() + np.array(q, np.int8).tobytes()
    return RawTensor("t", Q8, shape, data)


def _topk(k: int, idx: list[int], val: list[float], shape: tuple[int, ...]) -> RawTensor:
    data = struct.pack("<I", k) + np.array(idx, "<u4").tobytes() + np.array(val, "<f4").tobytes()
    return RawTensor("t", TOPK, shape, data)


def test_valid_hand_made_payloads() -> None:
    np.testing.assert_array_equal(decode_values(_q8(2, [0.5, 1.0], [2, -4, 127], (3,))), [1.0, -2.0, 127.0])
    np.testing.assert_array_equal(decode_values(_topk(2, [0, 3], [1.5, -2.0], (2, 2))), [[1.5, 0], [0, -2.0]])
    assert decode_values(_topk(0, [], [], (5,))).tolist() == [0] * 5
    assert decode_values(_q8(7, [], [], (0, 3))).shape == (0, 3)


@pytest.mark.parametrize(("tensor", "code"), [
    (_q8(0, [1.0], [1, 2], (2,)), "block_size"),                  # block 0
    (_q8(1 << 17, [1.0], [1, 2], (2,)), "block_size"),            # block above the bound
    (_q8(1, [1.0], [1, 2], (2,)), "block_size"),                  # 2 blocks of 1 need 2 scales
    (_q8(2, [float("nan")], [1, 2], (2,)), "scale"),
    (_q8(2, [float("inf")], [1, 2], (2,)), "scale"),
    (_q8(2, [-1.0], [1, 2], (2,)), "scale"),
    (_q8(2, [1.0], [-128, 2], (2,)), "value"),
    (RawTensor("t", Q8, (2,), b"\x02\x00\x00\x00\x00\x00\x80\x3f\x01"), "size"),  # one value short
    (RawTensor("t", TOPK, (3,), struct.pack("<I", 3) + _topk(2, [0, 1], [1.0, 2.0], (3,)).data[4:]), "k"),
    (_topk(2, [1, 1], [1.0, 2.0], (3,)), "indices"),              # duplicate
    (_topk(2, [2, 1], [1.0, 2.0], (3,)), "indices"),              # unsorted
    (_topk(1, [3], [1.0], (3,)), "indices"),                      # out of range
    (_topk(1, [2**32 - 1], [1.0], (3,)), "indices"),
    (_topk(1, [0], [float("inf")], (3,)), "value"),
    (_topk(4, [0, 1, 2, 3], [1.0] * 4, (3,)), "size"),            # k > number of values
    (RawTensor("t", TOPK, (3,), b"\x00\x00\x00"), "size"),
    (RawTensor("t", "<f2", (2,), np.array([1.0, np.inf], "<f2").tobytes()), "value"),
    (RawTensor("t", TOPK, (2**31, 2**31), struct.pack("<I", 0)), "size"),   # span above 2^32
])
def test_malformed_payloads_rejected_with_a_code(tensor: RawTensor, code: str) -> None:
    with pytest.raises(EncodingError) as e:
        decode_values(tensor)
    assert e.value.code == code and e.value.reason == "bad_encoding"
    base = (to_raw("t", np.zeros(tensor.shape, np.float32)),) if np.prod(tensor.shape) < 100 else None
    if base is not None:
        with pytest.raises(ValueError):
            apply_delta(base, (tensor,))


def test_encoded_tensors_only_as_deltas_of_float_tensors() -> None:
    t = Compressor("topk:0.5").compress({"n": np.ones(4, np.float32)})["n"]
    with pytest.raises(ValueError):
        from_raw(t)                                                  # not an array
    with pytest.raises(ValueError):
        apply_delta((to_raw("n", np.zeros(4, np.int64)),), (t,))     # integer base: value itself
    with pytest.raises(ValueError):
        apply_delta((to_raw("n", np.zeros(5, np.float32)),), (t,))   # shape differs from the base
    # a sparse tensor promising a huge shape is refused before anything is allocated (shape check)
    huge = RawTensor("n", TOPK, (2**32,), struct.pack("<I", 0))
    assert tensor_problem(huge.name, huge.dtype, huge.shape, len(huge.data)) is None
    with pytest.raises(ValueError):
        apply_delta((to_raw("n", np.zeros(4, np.float32)),), (huge,))


def test_wire_size_checks_of_encodings() -> None:
    assert tensor_problem("t", Q8, (10,), 4 + 4 + 10) is None
    # no scale for 10 values; 11 scales for 10 values
    assert tensor_problem("t", Q8, (10,), 4 + 10) == "tensor 't': 14 bytes cannot be a q8 tensor of 10 values"
    assert tensor_problem("t", Q8, (10,), 4 + 44 + 10) == "tensor 't': 58 bytes cannot be a q8 tensor of 10 values"
    assert tensor_problem("t", Q8, (0,), 4) is None
    assert tensor_problem("t", Q8, (0,), 8) == "tensor 't': 8 bytes cannot be a q8 tensor of 0 values"
    assert tensor_problem("t", TOPK, (10,), 4 + 80) is None
    assert tensor_problem("t", TOPK, (10,), 4 + 88) == "tensor 't': 92 bytes cannot be a topk tensor of 10 values"
    assert tensor_problem("t", TOPK, (10,), 4 + 7) == "tensor 't': 11 bytes cannot be a topk tensor of 10 values"


def test_non_finite_update_raises_and_keeps_the_residual() -> None:
    c = Compressor("topk:0.5")
    c.compress({"w": np.array([1.0, 2.0, 3.0, 4.0], np.float32)})
    before = {k: v.copy() for k, v in c.residual.items()}
    for spec in SPECS:
        with pytest.raises(ValueError):
            Compressor(spec).compress({"w": np.array([1.0, np.nan], np.float32)})
    with pytest.raises(ValueError):
        c.compress({"w": np.array([1.0, np.inf, 0.0, 0.0], np.float32)})
    assert {k: v.tolist() for k, v in c.residual.items()} == {k: v.tolist() for k, v in before.items()}


def test_encoders_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_q8("t", np.ones(3), 0)
    with pytest.raises(ValueError):
        encode_q8("t", np.array([np.nan]), 4)
    with pytest.raises(ValueError):
        encode_topk("t", (4,), np.array([2, 1]), np.ones(2))
    with pytest.raises(ValueError):
        encode_topk("t", (4,), np.array([4]), np.ones(1))
    assert decode_values(encode_q8("t", np.zeros(5, np.float32), 2)).tolist() == [0] * 5


# ---- golden vectors (protocol/vectors/compressed_delta.json, msg_model_delta_topk.json) -----------

def _vec_tensor(d: dict) -> RawTensor:
    return RawTensor(d["name"], d["dtype"], tuple(d["shape"]), bytes.fromhex(d["data"]))


def _spec_decode(t: RawTensor) -> list[float]:
    """Direct transcription of SPEC section 5.1, independent of wire/tensors.py."""
    n = int(np.prod(t.shape))
    if t.dtype == "<f4":
        return list(struct.unpack(f"<{n}f", t.data))
    if t.dtype == "<f2":
        return [float(x) for x in np.frombuffer(t.data, "<f2")]
    if t.dtype == "q8":
        (block,) = struct.unpack_from("<I", t.data)
        nb = -(-n // block)
        scales = struct.unpack_from(f"<{nb}f", t.data, 4)
        qs = struct.unpack_from(f"<{n}b", t.data, 4 + 4 * nb)
        return [float(np.float32(q) * np.float32(scales[i // block])) for i, q in enumerate(qs)]
    (k,) = struct.unpack_from("<I", t.data)
    idx = struct.unpack_from(f"<{k}I", t.data, 4)
    val = struct.unpack_from(f"<{k}f", t.data, 4 + 4 * k)
    out = [0.0] * n
    for i, v in zip(idx, val, strict=True):
        out[i] = v
    return out


def test_compressed_delta_vectors() -> None:
    import json
    from pathlib import Path
    v = json.loads((Path(__file__).resolve().parents[1] / "protocol/vectors/compressed_delta.json").read_text())
    base = tuple(_vec_tensor(t) for t in v["base"])
    assert {c["compress"] for c in v["cases"]} == {"f16", "int8", "topk"}
    for case in v["cases"]:
        delta = tuple(_vec_tensor(t) for t in case["delta"])
        for t in delta:
            if t.name in case["decoded"]:
                assert _spec_decode(t) == pytest.approx(case["decoded"][t.name], abs=0)
                assert decode_values(t).ravel().tolist() == case["decoded"][t.name]
        rebuilt = apply_delta(base, delta)
        assert [t.data.hex() for t in rebuilt] == [t["data"] for t in case["reconstructed"]]
        assert model_hash(rebuilt).hex() == case["model_hash"]
    kinds = {c["compress"]: [t["dtype"] for t in c["delta"]] for c in v["cases"]}
    assert kinds["topk"][:2] == ["topk", "topk"] and kinds["int8"][:2] == ["q8", "q8"]
    assert kinds["f16"][:2] == ["<f2", "<f2"]
    assert len(v["invalid"]) >= 10
    for bad in v["invalid"]:
        t = _vec_tensor(bad["tensor"])
        with pytest.raises(EncodingError) as e:
            apply_delta((to_raw("fc.weight", np.zeros((2, 3), np.float32)),), (t,))
        assert e.value.code == bad["code"]


def test_wire_decode_rejects_impossible_lengths_as_malformed() -> None:
    from gossipnode.wire import MsgType, seal
    import msgpack
    ident = Identity.from_seed(b"\x06" * 32)
    for dtype, shape, data in ((Q8, [10], b"\x00" * 14), (TOPK, [3], b"\x00" * 7), (TOPK, [1], b"\x00" * 20)):
        frame = seal(ident, "net", MsgType.MODEL_DATA, 5, 1.0,
                     [msgpack.packb([b"\xab" * 32, [["t", dtype, shape, data]]])])
        with pytest.raises(WireError) as e:
            decode(frame, "net", 1 << 20)
        assert e.value.reason == "malformed"
