"""The codec against the stored golden vectors in protocol/vectors (never regenerated here)."""
from __future__ import annotations

import hashlib
import json
from itertools import pairwise
import struct
from dataclasses import fields, is_dataclass
from enum import IntEnum
from pathlib import Path

import pytest
from blake3 import blake3

from gossipnode.core import messages as m
from gossipnode.wire import Identity, ReplayGuard, WireError, decode, encode, signing_digest
from gossipnode.wire.codec import VERSION
from gossipnode.wire.records import RECORD_DOMAIN, Ed25519RecordAuth, record_digest
from gossipnode.wire.tensors import apply_delta, model_hash

VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "vectors"
V1 = VECTORS / "v1"   # the released version 1: kept, no longer spoken (SPEC §12: loopback re-make)
V2 = VECTORS / "v2"   # version 2 (sha256 body and model hashes): likewise
V3 = VECTORS / "v3"   # version 3 (MODEL without sketch tables): likewise
MSG_CLASSES = {"ADVERTISE": m.Advertise, "VIEW": m.ViewShare, "PING": m.Ping, "PONG": m.Pong,
               "MODEL": m.ModelMsg, "MODEL_REQUEST": m.ModelRequest, "MODEL_DATA": m.ModelData}


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def tensor(d: dict) -> m.RawTensor:
    return m.RawTensor(d["name"], d["dtype"], tuple(d["shape"]), bytes.fromhex(d["data"]))


def tensors(ds: list) -> tuple[m.RawTensor, ...]:
    return tuple(tensor(d) for d in ds)


def record(d: dict) -> m.ViewRecord:
    return m.ViewRecord(bytes.fromhex(d["peer"]), d["last_active"], d["index"], m.Status(d["status"]),
                        tuple(d["addresses"]), bytes.fromhex(d["sig"]), d["pow"])


def view(ds: list) -> tuple[m.ViewRecord, ...]:
    return tuple(record(d) for d in ds)


def message(type_name: str, d: dict) -> m.Message:
    """Explicit JSON -> message mapping, independent of the generator."""
    if type_name == "ADVERTISE":
        return m.Advertise(d["round"], d["index"], m.Status(d["status"]), tuple(d["addresses"]),
                           bytes.fromhex(d["sig"]), d["pow"])
    if type_name == "VIEW":
        return m.ViewShare(d["round"], view(d["view"]))
    if type_name == "PING":
        return m.Ping(d["round"], d["nonce"], None if d["record"] is None else record(d["record"]))
    if type_name == "PONG":
        return m.Pong(d["round"], d["nonce"], None if d["record"] is None else record(d["record"]))
    if type_name == "MODEL":
        return m.ModelMsg(
            d["round"], m.ModelKind(d["kind"]), bytes.fromhex(d["model"]), view(d["view"]),
            None if d["base"] is None else bytes.fromhex(d["base"]), tensors(d["tensors"]),
            tuple(m.HistoryRecord(bytes.fromhex(h["peer"]), h["round"], h["distance"], tensors(h["tensors"]))
                  for h in d["histories"]),
            None if d.get("sketches") is None else m.SketchTable(
                tuple(bytes.fromhex(p) for p in d["sketches"]["peers"]), tuple(d["sketches"]["rounds"]),
                tensor(d["sketches"]["sketches"])))
    if type_name == "MODEL_REQUEST":
        return m.ModelRequest(bytes.fromhex(d["model"]))
    if type_name == "MODEL_DATA":
        return m.ModelData(bytes.fromhex(d["model"]), tensors(d["tensors"]))
    raise AssertionError(type_name)


def as_json(v: object) -> object:
    if is_dataclass(v):
        return {f.name: as_json(getattr(v, f.name)) for f in fields(v) if f.compare}   # not caches
    if isinstance(v, bytes | memoryview):
        return v.hex()
    if isinstance(v, IntEnum):
        return int(v)
    if isinstance(v, tuple | list):
        return [as_json(x) for x in v]
    return v


def spec_body_hash(body: bytes, cuts: list[int]) -> bytes:
    """SPEC §3 transcribed independently of the codec: BLAKE3 over the framed segment digests."""
    bounds = [0, *cuts, len(body)]
    out = b"gossipnode/v3 body\x00" + struct.pack(">I", len(bounds) - 1)
    for a, b in pairwise(bounds):
        out += struct.pack(">Q", b - a) + blake3(body[a:b]).digest()
    return blake3(out).digest()


GOLDEN = sorted(p.name for p in VECTORS.glob("msg_*.json"))
REJECT = sorted(p.name for p in VECTORS.glob("reject_*.json"))


def test_vectors_present() -> None:
    assert {load(n)["type"] for n in GOLDEN} == set(MSG_CLASSES)
    assert {load(n)["reason"] for n in REJECT} == {
        "too_large", "malformed", "unknown_version", "bad_signature", "wrong_network", "replay", "unknown_type"}


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_encode_is_byte_exact(name: str) -> None:
    v = load(name)
    ident = Identity.from_seed(bytes.fromhex(v["identity_seed"]))
    assert ident.public_key.hex() == v["sender"]
    msg = message(v["type"], v["message"])
    frame = encode(ident, v["network_id"], v["seq"], v["ts"], msg)
    assert frame.hex() == v["frame"]
    body = bytes.fromhex(v["body"])
    assert spec_body_hash(body, v["cuts"]).hex() == v["body_hash"]
    assert signing_digest(VERSION, v["network_id"], v["type_code"], ident.public_key, v["seq"], v["ts"],
                          bytes.fromhex(v["body_hash"])).hex() == v["signing_digest"]


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_decode_gives_fields(name: str) -> None:
    v = load(name)
    env = decode(bytes.fromhex(v["frame"]), v["network_id"], 1 << 20, ReplayGuard())
    assert env.type.name == v["type"] and int(env.type) == v["type_code"]
    assert (env.sender.hex(), env.seq, env.ts) == (v["sender"], v["seq"], v["ts"])
    assert as_json(env.msg) == v["message"]
    assert env.msg == message(v["type"], v["message"])


@pytest.mark.parametrize("name", REJECT)
def test_rejection_vectors(name: str) -> None:
    v = load(name)
    guard = ReplayGuard(window=v["replay_window"])
    for case in v["cases"]:
        frame = bytes.fromhex(case["frame"])
        if case["expect"] == "accept":
            decode(frame, v["network_id"], v["max_size"], guard)
        else:
            with pytest.raises(WireError) as err:
                decode(frame, v["network_id"], v["max_size"], guard)
            assert err.value.reason == case["expect"]


def test_model_hash_vector() -> None:
    v = load("model_hash.json")
    assert model_hash(tensors(v["tensors"])).hex() == v["hash"]
    assert model_hash(()).hex() == v["empty_model_hash"]


def test_delta_vector() -> None:
    v = load("delta.json")
    rebuilt = apply_delta(tensors(v["base"]), tensors(v["delta"]))
    assert rebuilt == tensors(v["reconstructed"])
    assert model_hash(rebuilt).hex() == v["model_hash"]


def test_sample_order_vector() -> None:
    for c in load("sample_order.json")["cases"]:
        pk = bytes.fromhex(c["public_key"])
        assert hashlib.sha256(pk + c["round"].to_bytes(8, "big")).hexdigest() == c["key"]


def test_record_vector() -> None:
    """Membership records: the exact signed bytes, the digest, the signature, and forgeries."""
    v = load("record.json")
    rec = record(v["record"])
    ident = Identity.from_seed(bytes.fromhex(v["identity_seed"]))
    assert ident.public_key == rec.peer and bytes.fromhex(v["domain"]) == RECORD_DOMAIN
    digest = hashlib.sha256(RECORD_DOMAIN + bytes.fromhex(v["signed_bytes"])).digest()
    assert digest.hex() == v["digest"] == record_digest(v["network_id"], rec).hex()
    auth = Ed25519RecordAuth(Identity.generate(), v["network_id"])
    assert auth.verify(rec)
    assert Ed25519RecordAuth(ident, v["network_id"]).sign(rec) == rec   # Ed25519 is deterministic
    assert not Ed25519RecordAuth(ident, "other-network").verify(rec)
    for f in v["forged"]:
        assert not auth.verify(record(f)), f
    # join proof-of-work: one hash over the key and the nonce (not covered by the signature)
    h = hashlib.sha256(bytes.fromhex(v["pow_domain"]) + rec.peer + rec.pow.to_bytes(8, "big")).digest()
    assert h.hex() == v["pow_sha256"]
    assert 256 - int.from_bytes(h, "big").bit_length() == v["pow_bits"] >= 12


def test_golden_view_records_are_signed_by_their_peers() -> None:
    auth = Ed25519RecordAuth(Identity.generate(), "golden")
    for name in ("msg_view.json", "msg_model_full.json"):
        recs = view(load(name)["message"]["view"])
        assert recs and all(auth.verify(r) for r in recs)


@pytest.mark.parametrize("name", [f"{d.name}/{p.name}" for d in (V1, V2, V3) for p in sorted(d.glob("msg_*.json"))])
def test_old_version_frames_are_rejected_as_unknown_version(name: str) -> None:
    v = json.loads((VECTORS / name).read_text())
    with pytest.raises(WireError) as err:
        decode(bytes.fromhex(v["frame"]), v["network_id"], 1 << 20, ReplayGuard())
    assert err.value.reason == "unknown_version"


def test_segment_vector_names_tensors_without_a_second_pass() -> None:
    """A tensor whose data is exactly one segment gets the segment's digest as its model-hash leaf."""
    v = load("msg_model_data_segments.json")
    assert len(v["cuts"]) >= 3
    env = decode(bytes.fromhex(v["frame"]), v["network_id"], 1 << 20, ReplayGuard())
    big = [t for t in env.msg.tensors if len(t.data) >= 4096]
    assert len(big) == 2 and all(t.digest == blake3(t.data).digest() for t in big)
    assert model_hash(env.msg.tensors).hex() == v["message"]["model"]


def _splitmix64(i: int) -> int:
    """SPEC §15.2, transcribed in plain integers (independent of numpy's uint64 arithmetic)."""
    m = (1 << 64) - 1
    z = ((i + 1) * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_history_sketch_vector_follows_the_spec_rule() -> None:
    from gossipnode.learn.aggregation.sketch import sketch
    v = load("history_sketch.json")
    assert [str(_splitmix64(i)) for i in range(4)] == v["splitmix64_first"]
    assert v["splitmix64_first"][0] == str(0xE220A8397B1DCDAF)   # splitmix64's published first output
    hist = v["history"]
    for case in v["cases"]:
        d = case["dims"]
        want = [0.0] * d
        for i, x in enumerate(hist):
            z = _splitmix64(i)
            want[z >> (64 - (d.bit_length() - 1)) if d > 1 else 0] += x if z & 1 == 0 else -x
        assert want == case["sketch"]
        assert sketch(hist, d).tolist() == case["sketch"]
