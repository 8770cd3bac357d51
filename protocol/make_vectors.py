"""Regenerate protocol/vectors/*.json (golden and rejection test vectors of the current version).

    .venv/bin/python protocol/make_vectors.py

The vectors are the contract: tests read the JSON, never this script. Regenerate only when
the wire format changes on purpose (and bump the protocol version), then review the diff.
Vectors of released versions live in vectors/v<N>/ and are never regenerated (this script
only rewrites the top-level files). Addresses in vectors are loopback only.
"""
from __future__ import annotations

import hashlib
import json
from itertools import pairwise
from dataclasses import fields, is_dataclass
from enum import IntEnum
from pathlib import Path

import msgpack
import numpy as np
from blake3 import blake3

from gossipnode.core.messages import (
    Advertise,
    HistoryRecord,
    Message,
    ModelData,
    ModelKind,
    ModelMsg,
    ModelRequest,
    Ping,
    Pong,
    RawTensor,
    SketchTable,
    Status,
    ViewRecord,
    ViewShare,
)
from gossipnode.core.auth import POW_DOMAIN, pow_bits, solve_pow
from gossipnode.wire import Identity, MsgType, ReplayGuard, WireError, decode, encode, seal, signing_digest
from gossipnode.learn.aggregation.sketch import sketch, splitmix64
from gossipnode.wire.codec import VERSION, body_digest
from gossipnode.wire.records import RECORD_DOMAIN, Ed25519RecordAuth, record_digest
from gossipnode.learn.compress import Compressor
from gossipnode.wire.tensors import (
    Q8,
    TOPK,
    EncodingError,
    apply_delta,
    decode_values,
    make_delta,
    model_hash,
    to_raw,
)

OUT = Path(__file__).resolve().parent / "vectors"
SEED = b"\x01" * 32
NETWORK = "golden"
SEQ = 1_700_000_000_000_000
TS = 1700000000.25
MAX_SIZE = 1 << 20


def to_json(v: object) -> object:
    """Message value -> JSON: bytes as lowercase hex, enums as ints, tuples as lists."""
    if is_dataclass(v):
        return {f.name: to_json(getattr(v, f.name)) for f in fields(v) if f.compare}   # not caches
    if isinstance(v, bytes | memoryview):
        return v.hex()
    if isinstance(v, IntEnum):
        return int(v)
    if isinstance(v, tuple | list):
        return [to_json(x) for x in v]
    return v


def peer_identity(i: int) -> Identity:
    return Identity.from_seed(bytes([i + 2]) * 32)


def peer(i: int) -> bytes:
    return peer_identity(i).public_key


def signed(i: int, last_active: int, index: int, status: Status, addresses: tuple[str, ...] = (),
           pow_: int = 0) -> ViewRecord:
    """A membership record signed by its own peer (seed bytes([i + 2]) * 32)."""
    rec = ViewRecord(peer(i), last_active, index, status, addresses, pow=pow_)
    return Ed25519RecordAuth(peer_identity(i), NETWORK).sign(rec)


def sample_tensors() -> tuple[RawTensor, ...]:
    return (
        to_raw("fc.weight", np.array([[1.0, -2.5, 0.0], [0.5, 3.25, -0.125]], dtype=np.float32)),
        to_raw("fc.bias", np.array([0.25, -1.0], dtype=np.float16)),
        to_raw("bn.num_batches_tracked", np.array(12345, dtype=np.int64)),
        to_raw("mask", np.array([True, False, True])),
        to_raw("codes", np.array([[0, 255]], dtype=np.uint8)),
    )


def segmented_tensors() -> tuple[RawTensor, ...]:
    return (
        to_raw("w", (np.arange(1024, dtype=np.float32) / 1024).reshape(32, 32)),
        to_raw("b", np.array([0.5, -0.5], dtype=np.float32)),
        to_raw("v", np.arange(2048, dtype=np.int16)),
    )


def view() -> tuple[ViewRecord, ...]:
    return (signed(0, 41, 0, Status.JOIN, ("http://127.0.0.1:8470", "mqtt://0123456789abcdef"),
                   solve_pow(peer(0), 8)),
            signed(1, 42, 1, Status.LEAVE),
            signed(2, 300, 70000, Status.JOIN, ("http://127.0.0.1:8471/\u00e9",)))


def own_record(ident: Identity, last_active: int, index: int, status: Status,
               addresses: tuple[str, ...] = ()) -> ViewRecord:
    return Ed25519RecordAuth(ident, NETWORK).sign(ViewRecord(ident.public_key, last_active, index, status, addresses))


def golden_messages(ident: Identity) -> dict[str, Message]:
    base = sample_tensors()
    model = tuple(
        to_raw(t.name, np.frombuffer(t.data, t.dtype).reshape(t.shape) * 2 if t.dtype == "<f4" else
               np.frombuffer(t.data, t.dtype).reshape(t.shape))
        for t in base
    )
    delta, delta_hash = make_delta(model, base)
    history = HistoryRecord(peer(1), 40, 2, (to_raw("fc.weight", np.full((2, 3), 0.5, np.float32)),))
    return {
        "advertise": Advertise.of(own_record(ident, 42, 7, Status.JOIN, ("http://127.0.0.1:8470",))),
        "advertise_leave": Advertise.of(own_record(ident, 43, 8, Status.LEAVE)),
        "view": ViewShare(round=42, view=view()),
        "ping": Ping(round=42, nonce=2**63 - 1),
        "ping_with_record": Ping(round=42, nonce=7, record=own_record(ident, 44, 7, Status.JOIN,
                                                                      ("http://127.0.0.1:8470",))),
        "pong": Pong(round=42, nonce=0, record=own_record(ident, 44, 7, Status.JOIN, ("http://127.0.0.1:8470",))),
        "pong_no_record": Pong(round=42, nonce=5),
        "model_full": ModelMsg(42, ModelKind.TRAINED, model_hash(base), view(), None, base, ()),
        "model_delta": ModelMsg(43, ModelKind.AGGREGATED, delta_hash, view()[:1], model_hash(base), delta,
                                (history,)),
        "model_request": ModelRequest(model_hash(base)),
        "model_data": ModelData(model_hash(base), base),
        "model_data_empty": ModelData(b"\xab" * 32, ()),
        # a sketch table of two peers, 4 values each (SPEC §15.2); real tables use 128
        "model_sketches": ModelMsg(45, ModelKind.AGGREGATED, delta_hash, (), model_hash(base), delta, (),
                                   SketchTable((peer(1), peer(2)), (44, 40), to_raw("sketches", np.array(
                                       [[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -3.0, 8.0]], np.float16)))),
        # two tensors of >= 4096 bytes: each one's data is a segment of its own (SPEC §3 cuts)
        "model_data_segments": ModelData(model_hash(segmented_tensors()), segmented_tensors()),
    }


def compressed_base_model() -> tuple[tuple[RawTensor, ...], tuple[RawTensor, ...]]:
    """A base and a trained model for the compressed-delta vectors (SPEC section 5.1)."""
    base = sample_tensors()
    w = np.array([[1.0, -2.5, 0.0], [0.5, 3.25, -0.125]], np.float32)
    model = (to_raw("fc.weight", w + np.array([[0.5, -0.03125, 0.0], [0.0078125, -1.0, 0.25]], np.float32)),
             to_raw("fc.bias", (np.frombuffer(base[1].data, "<f2") + np.float16(0.5)).astype(np.float16)),
             base[2], base[3], base[4])
    return base, model


def compressed_deltas() -> dict[str, tuple[tuple[RawTensor, ...], bytes]]:
    """(delta, model hash) of the sample model for each compressor (int8: blocks of 4, to show 2)."""
    base, model = compressed_base_model()
    out = {}
    for name, spec in (("f16", "f16"), ("int8", "int8"), ("topk", "topk:0.375")):
        c = Compressor(spec)
        if name == "int8":
            c.spec = type(c.spec)("int8", block=4)
        out[name] = make_delta(model, base, c)
    return out


def body_of(frame: bytes) -> bytes:
    return msgpack.unpackb(frame)[7]


def cuts_of(frame: bytes) -> list[int]:
    return msgpack.unpackb(frame)[6]


def segment_hash(body: bytes, cuts: list[int]) -> bytes:
    """SPEC §3 body_hash, transcribed: the body split at cuts, each segment's BLAKE3 framed."""
    bounds = [0, *cuts, len(body)]
    segs = [(b - a, blake3(body[a:b]).digest()) for a, b in pairwise(bounds)]
    return body_digest(segs)


def golden(ident: Identity, name: str, msg: Message, seq: int) -> dict[str, object]:
    frame = encode(ident, NETWORK, seq, TS, msg)
    body, cuts = body_of(frame), cuts_of(frame)
    env = decode(frame, NETWORK, MAX_SIZE)
    assert env.msg == msg
    body_hash = segment_hash(body, cuts)
    return {
        "name": name,
        "type": env.type.name,
        "type_code": int(env.type),
        "identity_seed": SEED.hex(),
        "sender": ident.public_key.hex(),
        "network_id": NETWORK,
        "seq": seq,
        "ts": TS,
        "message": to_json(msg),
        "body": body.hex(),
        "cuts": cuts,
        "body_hash": body_hash.hex(),
        "signing_digest": signing_digest(VERSION, NETWORK, int(env.type), ident.public_key, seq, TS,
                                         body_hash).hex(),
        "frame": frame.hex(),
    }


def rejections(ident: Identity) -> dict[str, dict[str, object]]:
    ping = Ping(1, 2)
    ok = encode(ident, NETWORK, SEQ, TS, ping)
    ping_body = body_of(ok)
    bad_sig = bytearray(ok)
    bad_sig[-1] ^= 0x01
    bad_body = seal(ident, NETWORK, MsgType.ADVERTISE, SEQ + 1, TS,
                    [msgpack.packb([1, 2, 9, [], b"s" * 64])])  # status 9
    v1_advert = seal(ident, NETWORK, MsgType.ADVERTISE, SEQ + 2, TS, [msgpack.packb([1, 2, 0, []])])  # no sig
    short_sig = seal(ident, NETWORK, MsgType.VIEW, SEQ + 3, TS,
                     [msgpack.packb([1, [[peer(0), 1, 1, 0, [], b"s" * 63]]])])
    cases: dict[str, list[tuple[bytes, str]]] = {
        "too_large": [(encode(ident, NETWORK, SEQ, TS, ModelRequest(b"\x00" * 32)), "too_large")],
        "malformed": [(ok[:-1], "malformed"), (b"\xc1", "malformed"), (bad_body, "malformed"),
                      (v1_advert, "malformed"), (short_sig, "malformed")],
        "unknown_version": [(seal(ident, NETWORK, MsgType.PING, SEQ, TS, [ping_body], version=v),
                             "unknown_version") for v in (1, 2, 3, 5)],
        "bad_signature": [(bytes(bad_sig), "bad_signature")],
        "wrong_network": [(encode(ident, "other", SEQ, TS, ping), "wrong_network")],
        "unknown_type": [(seal(ident, NETWORK, 99, SEQ, TS, [ping_body]), "unknown_type")],
        "replay": [
            (encode(ident, NETWORK, SEQ + 10, TS, ping), "accept"),
            (encode(ident, NETWORK, SEQ + 5, TS, ping), "accept"),     # older, inside the window
            (encode(ident, NETWORK, SEQ + 10, TS, ping), "replay"),    # exact replay
            (encode(ident, NETWORK, SEQ + 5, TS, ping), "replay"),
            (encode(ident, NETWORK, SEQ + 10 - 1024, TS, ping), "replay"),  # below the window
            (encode(ident, NETWORK, SEQ + 11, TS, ping), "accept"),
        ],
    }
    out = {}
    for reason, frames in cases.items():
        max_size = 40 if reason == "too_large" else MAX_SIZE
        guard = ReplayGuard(window=1024)
        for frame, expect in frames:  # self-check before writing
            try:
                decode(frame, NETWORK, max_size, guard)
                got = "accept"
            except WireError as e:
                got = e.reason
            assert got == expect, (reason, got, expect)
        out[reason] = {
            "reason": reason,
            "network_id": NETWORK,
            "max_size": max_size,
            "replay_window": 1024,
            "note": "decode the frames in order with one fresh ReplayGuard; each gives `expect`",
            "cases": [{"frame": f.hex(), "expect": e} for f, e in frames],
        }
    return out


def shape_rejections(ident: Identity) -> dict[str, object]:
    """Empty tensors whose shape spans more than 2^32 elements (SPEC section 5): malformed."""
    frames = [
        seal(ident, NETWORK, MsgType.MODEL_DATA, SEQ + 2, TS,
             [msgpack.packb([b"\xab" * 32, [["t", "<f4", [0, 2**62, 2**62], b""]]])]),
        seal(ident, NETWORK, MsgType.MODEL_DATA, SEQ + 3, TS,
             [msgpack.packb([b"\xab" * 32, [["t", "|u1", [2**32 + 1, 0], b""]]])]),
    ]
    for frame in frames:
        try:
            decode(frame, NETWORK, MAX_SIZE, ReplayGuard(window=1024))
            got = "accept"
        except WireError as e:
            got = e.reason
        assert got == "malformed", got
    return {
        "reason": "malformed",
        "network_id": NETWORK,
        "max_size": MAX_SIZE,
        "replay_window": 1024,
        "note": "tensor shapes spanning more than 2^32 elements with empty data; each gives `expect`",
        "cases": [{"frame": f.hex(), "expect": "malformed"} for f in frames],
    }


def hash_vectors() -> dict[str, object]:
    base = sample_tensors()
    model = tuple(to_raw(t.name, np.frombuffer(t.data, t.dtype).reshape(t.shape) + 1)
                  if t.dtype in ("<f4", "<f2") else t for t in base)
    delta, reconstructed = make_delta(model, base)
    pk = Identity.from_seed(SEED).public_key
    rec = signed(0, 41, 3, Status.JOIN, ("http://127.0.0.1:8470",), solve_pow(peer(0), 12))
    packed = msgpack.packb([NETWORK, rec.peer, rec.last_active, rec.index, int(rec.status), list(rec.addresses)],
                           use_bin_type=True)
    record = {
        "rule": "sig = Ed25519(peer key, sha256(domain || msgpack([network_id, peer, last_active, index, "
                "status, addresses])))",
        "domain": RECORD_DOMAIN.hex(),
        "network_id": NETWORK,
        "identity_seed": (bytes([2]) * 32).hex(),
        "record": to_json(rec),
        "signed_bytes": packed.hex(),
        "digest": record_digest(NETWORK, rec).hex(),
        "pow_rule": "leading zero bits of sha256(pow_domain || peer || u64be(pow)); pow is not signed",
        "pow_domain": POW_DOMAIN.hex(),
        "pow_sha256": hashlib.sha256(POW_DOMAIN + rec.peer + rec.pow.to_bytes(8, "big")).hexdigest(),
        "pow_bits": pow_bits(rec.peer, rec.pow),
        "forged": [  # each must fail verification
            to_json(ViewRecord(rec.peer, rec.last_active, rec.index, Status.LEAVE, rec.addresses, rec.sig)),
            to_json(ViewRecord(rec.peer, rec.last_active, rec.index, rec.status, ("http://127.0.0.1:9999",), rec.sig)),
            to_json(ViewRecord(rec.peer, 2**63 - 1, rec.index, rec.status, rec.addresses, rec.sig)),
            to_json(ViewRecord(peer(1), rec.last_active, rec.index, rec.status, rec.addresses, rec.sig)),
        ],
    }
    assert hashlib.sha256(RECORD_DOMAIN + packed).digest() == record_digest(NETWORK, rec)
    return {
        "record": record,
        "model_hash": {"tensors": to_json(base), "hash": model_hash(base).hex(),
                       "empty_model_hash": model_hash(()).hex()},
        "delta": {"base": to_json(base), "delta": to_json(delta),
                  "reconstructed": to_json(apply_delta(base, delta)), "model_hash": reconstructed.hex()},
        "sample_order": {
            "rule": "sha256(public_key || round as 8-byte big-endian unsigned)",
            "cases": [{"public_key": pk.hex(), "round": r,
                       "key": hashlib.sha256(pk + r.to_bytes(8, "big")).hexdigest()} for r in (0, 1, 2**40)],
        },
    }


def sketch_vectors() -> dict[str, object]:
    """The count-sketch every node applies to a history (SPEC §15.2)."""
    vec = np.arange(1, 11, dtype=np.float32) * np.array([1, -1] * 5, np.float32)
    return {
        "rule": "z_i = splitmix64 output i (0-based; state starts at 0, adds 0x9E3779B97F4A7C15 per output); "
                "sketch[z_i >> (64 - log2 dims)] += (+1 if z_i & 1 == 0 else -1) * history[i]",
        "splitmix64_first": [str(int(z)) for z in splitmix64(np.arange(4, dtype=np.uint64))],
        "history": vec.tolist(),
        "cases": [{"dims": d, "sketch": sketch(vec, d).tolist()} for d in (1, 4, 8)],
    }


def compressed_vectors() -> dict[str, object]:
    base, model = compressed_base_model()
    cases = []
    for name, (delta, h) in compressed_deltas().items():
        cases.append({"compress": name, "delta": to_json(delta),
                      "decoded": {t.name: decode_values(t).ravel().tolist() for t in delta if t.dtype in
                                  ("<f4", "<f2", Q8, TOPK)},
                      "reconstructed": to_json(apply_delta(base, delta)), "model_hash": h.hex()})

    def raw(dtype: str, shape: tuple[int, ...], data: bytes) -> dict:
        return to_json(RawTensor("fc.weight", dtype, shape, data))

    u32 = lambda v: int(v).to_bytes(4, "little")  # noqa: E731
    f32 = lambda *v: np.array(v, "<f4").tobytes()  # noqa: E731
    q = lambda *v: np.array(v, np.int8).tobytes()  # noqa: E731
    invalid = [
        (raw(Q8, (2, 3), u32(0) + f32(1.0) + q(1, 2, 3, 4, 5, 6)), "block_size"),
        (raw(Q8, (2, 3), u32(1 << 17) + f32(1.0) + q(1, 2, 3, 4, 5, 6)), "block_size"),
        (raw(Q8, (2, 3), u32(2) + f32(1.0) + q(1, 2, 3, 4, 5, 6)), "block_size"),
        (raw(Q8, (2, 3), u32(8) + f32(float("nan")) + q(1, 2, 3, 4, 5, 6)), "scale"),
        (raw(Q8, (2, 3), u32(8) + f32(-1.0) + q(1, 2, 3, 4, 5, 6)), "scale"),
        (raw(Q8, (2, 3), u32(8) + f32(1.0) + q(-128, 2, 3, 4, 5, 6)), "value"),
        (raw(Q8, (2, 3), u32(8) + f32(1.0) + q(1, 2, 3, 4, 5)), "size"),
        (raw(TOPK, (2, 3), u32(3) + u32(0) + u32(1) + f32(1.0, 2.0)), "k"),
        (raw(TOPK, (2, 3), u32(2) + u32(1) + u32(1) + f32(1.0, 2.0)), "indices"),
        (raw(TOPK, (2, 3), u32(2) + u32(4) + u32(1) + f32(1.0, 2.0)), "indices"),
        (raw(TOPK, (2, 3), u32(1) + u32(6) + f32(1.0)), "indices"),
        (raw(TOPK, (2, 3), u32(1) + u32(0) + f32(float("inf"))), "value"),
        (raw(TOPK, (2, 3), u32(7) + b"".join(u32(i) for i in range(7)) + f32(*[1.0] * 7)), "size"),
        (raw("<f2", (2, 3), np.array([1, 2, 3, 4, 5, np.inf], "<f2").tobytes()), "value"),
    ]
    for t, code in invalid:   # self-check before writing
        try:
            decode_values(RawTensor(t["name"], t["dtype"], tuple(t["shape"]), bytes.fromhex(t["data"])))
            got = "accept"
        except EncodingError as e:
            got = e.code
        assert got == code, (t, got, code)
    return {
        "rule": "SPEC section 5.1: model = model_hash(cast(float32(base) + decode(delta))); the base is "
                "the first tensors of model_hash.json's sample",
        "base": to_json(base), "trained": to_json(model), "cases": cases,
        "invalid_note": "each tensor, as the delta of a float32 base of shape [2, 3], is rejected "
                        "bad_encoding with this code",
        "invalid": [{"tensor": t, "code": c} for t, c in invalid],
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ident = Identity.from_seed(SEED)
    files: dict[str, object] = {}
    for i, (name, msg) in enumerate(golden_messages(ident).items()):
        files[f"msg_{name}.json"] = golden(ident, name, msg, SEQ + i)
    for reason, vec in rejections(ident).items():
        files[f"reject_{reason}.json"] = vec
    files["reject_malformed_shape.json"] = shape_rejections(ident)
    files["compressed_delta.json"] = compressed_vectors()
    topk, topk_hash = compressed_deltas()["topk"]   # a TRAINED top-k delta (SPEC section 5.1)
    files["msg_model_delta_topk.json"] = golden(
        ident, "model_delta_topk",
        ModelMsg(44, ModelKind.TRAINED, topk_hash, view()[:1], model_hash(sample_tensors()), topk, ()), SEQ + 100)
    files["history_sketch.json"] = sketch_vectors()
    for name, vec in hash_vectors().items():
        files[f"{name}.json"] = vec
    for old in OUT.glob("*.json"):
        if old.name not in files:
            old.unlink()
    for name, content in files.items():
        (OUT / name).write_text(json.dumps(content, indent=1) + "\n")
    print(f"wrote {len(files)} vector files to {OUT}")


if __name__ == "__main__":
    main()
