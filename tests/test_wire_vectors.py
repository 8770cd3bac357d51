"""The codec against the stored golden vectors in protocol/vectors (never regenerated here)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from enum import IntEnum
from pathlib import Path

import pytest

from gossipnode.core import messages as m
from gossipnode.wire import Identity, ReplayGuard, WireError, decode, encode, signing_digest
from gossipnode.wire.tensors import apply_delta, model_hash

VECTORS = Path(__file__).resolve().parents[1] / "protocol" / "vectors"
MSG_CLASSES = {"ADVERTISE": m.Advertise, "VIEW": m.ViewShare, "PING": m.Ping, "PONG": m.Pong,
               "MODEL": m.ModelMsg, "MODEL_REQUEST": m.ModelRequest, "MODEL_DATA": m.ModelData}


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def tensor(d: dict) -> m.RawTensor:
    return m.RawTensor(d["name"], d["dtype"], tuple(d["shape"]), bytes.fromhex(d["data"]))


def tensors(ds: list) -> tuple[m.RawTensor, ...]:
    return tuple(tensor(d) for d in ds)


def view(ds: list) -> tuple[m.ViewRecord, ...]:
    return tuple(m.ViewRecord(bytes.fromhex(d["peer"]), d["last_active"], d["index"], m.Status(d["status"]),
                              tuple(d["addresses"])) for d in ds)


def message(type_name: str, d: dict) -> m.Message:
    """Explicit JSON -> message mapping, independent of the generator."""
    if type_name == "ADVERTISE":
        return m.Advertise(d["round"], d["index"], m.Status(d["status"]), tuple(d["addresses"]))
    if type_name == "VIEW":
        return m.ViewShare(d["round"], view(d["view"]))
    if type_name in ("PING", "PONG"):
        return MSG_CLASSES[type_name](d["round"], d["nonce"])
    if type_name == "MODEL":
        return m.ModelMsg(
            d["round"], m.ModelKind(d["kind"]), bytes.fromhex(d["model"]), view(d["view"]),
            None if d["base"] is None else bytes.fromhex(d["base"]), tensors(d["tensors"]),
            tuple(m.HistoryRecord(bytes.fromhex(h["peer"]), h["round"], h["distance"], tensors(h["tensors"]))
                  for h in d["histories"]))
    if type_name == "MODEL_REQUEST":
        return m.ModelRequest(bytes.fromhex(d["model"]))
    if type_name == "MODEL_DATA":
        return m.ModelData(bytes.fromhex(d["model"]), tensors(d["tensors"]))
    raise AssertionError(type_name)


def as_json(v: object) -> object:
    if is_dataclass(v):
        return {f.name: as_json(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, IntEnum):
        return int(v)
    if isinstance(v, tuple | list):
        return [as_json(x) for x in v]
    return v


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
    assert hashlib.sha256(body).hexdigest() == v["body_sha256"]
    assert signing_digest(1, v["network_id"], v["type_code"], ident.public_key, v["seq"], v["ts"],
                          hashlib.sha256(body).digest()).hex() == v["signing_digest"]


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
