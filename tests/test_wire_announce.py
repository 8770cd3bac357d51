"""wire.announce: the signed MQTT announce / will records (SPEC 14.3). Exact bytes, and each
validation failure of an untrusted record with its own message."""
from __future__ import annotations

import json

import pytest

from gossipnode.wire import announce
from gossipnode.wire.announce import AnnounceError, make_record, parse_record, transports_of
from gossipnode.wire.identity import Identity

NET = "net"
IDENT = Identity.from_seed(bytes(range(32)))
NID = IDENT.node_id
ADDRS = (f"mqtt://{NID}", "http://127.0.0.1:8000", "https://127.0.0.1:1")
# golden: the record the transport published before the codec moved into wire/ (ts fixed)
GOLDEN_UP = (
    b'{"v":1,"status":"up","node_id":"56475aa75463474c","public_key":'
    b'"03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8","session":'
    b'"abababababababababababababababab","addresses":["mqtt://56475aa75463474c","http://127.0.0.1:8000",'
    b'"https://127.0.0.1:1"],"transports":["http","mqtt"],"ts":1700000000,"sig":'
    b'"54b5ac791e0ee4bc798c65d5d32d94219a03ad354b07e6f40cc3d6c5565603341dae8088918bf9c0f60a1b8c97b56a1d7'
    b'af4bfa401c3f77695537f1a5491690b"}')


def test_record_bytes_are_unchanged(monkeypatch) -> None:
    monkeypatch.setattr(announce.time, "time", lambda: 1700000000.5)
    assert transports_of(ADDRS) == ("http", "mqtt")          # https is an address scheme, not a transport
    assert make_record(IDENT, NET, "up", "ab" * 16, ADDRS, transports_of(ADDRS)) == GOLDEN_UP
    rec = parse_record(GOLDEN_UP, NET, NID)
    assert (rec.status, rec.node_id, rec.public_key, rec.addresses, rec.ts) == (
        "up", NID, IDENT.public_key, ADDRS, 1700000000)
    gone = parse_record(make_record(IDENT, NET, "gone", "ab" * 16, ADDRS, ("mqtt",)), NET, NID)
    assert gone.status == "gone" and gone.addresses == () and gone.transports == ()


def _resigned(**changes) -> bytes:
    """GOLDEN_UP with fields changed and signed again by its own key (only the change is wrong)."""
    rec = json.loads(GOLDEN_UP) | changes
    rec["sig"] = IDENT.sign(announce._signing_bytes(NET, rec)).hex()
    return json.dumps(rec).encode()


@pytest.mark.parametrize(("payload", "message"), [
    (b" " * 4097, "announce too large"),
    (b"\xff\xfe", "announce is not JSON"),
    (b"{" * 50, "announce is not JSON"),
    (b"[]", "announce has wrong keys"),
    (json.dumps(json.loads(GOLDEN_UP) | {"x": 1}).encode(), "announce has wrong keys"),
    (_resigned(v=2), "unknown announce version or status"),
    (_resigned(status="down"), "unknown announce version or status"),
    (_resigned(session=7), "announce field types"),
    (_resigned(session="AB" * 16), "announce field format"),
    (_resigned(ts=1.5), "announce ts"),
    (_resigned(addresses=[f"mqtt://{NID}"] * 9), "announce lists"),
    (_resigned(addresses=[f"mqtt://{NID}", "127.0.0.1:80"]), "bad address"),
    (_resigned(addresses=[f"mqtt://{NID}", "ftp://127.0.0.1"]), "unknown address scheme"),
    (_resigned(transports=["pigeon"]), "unknown transport"),
    (_resigned(addresses=["http://127.0.0.1:8000"]), "announce lacks its own mqtt address"),
    (GOLDEN_UP.replace(b"8000", b"8001"), "bad announce signature"),       # tampered after signing
])
def test_bad_record_rejected_with_its_message(payload: bytes, message: str) -> None:
    with pytest.raises(AnnounceError) as e:
        parse_record(payload, NET, NID)
    assert str(e.value) == message


def test_record_is_bound_to_topic_key_and_network() -> None:
    with pytest.raises(AnnounceError, match="^node id does not match topic or public key$"):
        parse_record(GOLDEN_UP, NET, "0" * 16)
    with pytest.raises(AnnounceError, match="^bad announce signature$"):
        parse_record(GOLDEN_UP, "other-net", NID)
