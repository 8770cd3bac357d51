"""Signed announce and last-will records (protocol/SPEC.md 14.3).

A node publishes an ``"up"`` record (its addresses, public key, transports, session) to its
announce topic, and its MQTT last will is a ``"gone"`` record for the same session. Records
come from the broker and are untrusted: `parse_record` size-limits, strictly validates and
signature-checks them, raising `AnnounceError` with a short message.

May import: the standard library and wire.identity (no transport, I/O or node).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from gossipnode.wire.identity import Identity, verify
from gossipnode.wire.identity import node_id as node_id_of

MQTT_SCHEME = "mqtt"
ANNOUNCE_MAX_BYTES = 4096
ANNOUNCE_VERSION = 1
ANNOUNCE_SIGN_PREFIX = b"gossipnode-mqtt-announce-v1\x00"
MAX_ADDRESSES = 8
MAX_ADDRESS_LEN = 256
ADDRESS_SCHEMES = ("http", "https", MQTT_SCHEME)
KNOWN_TRANSPORTS = frozenset({"http", "mqtt"})   # what a record may list (SPEC 14.3), not the registry
_KEYS = frozenset({"v", "status", "node_id", "public_key", "session", "addresses", "transports", "ts", "sig"})
HEX16 = re.compile(r"[0-9a-f]{16}\Z")   # a node id
_HEX32 = re.compile(r"[0-9a-f]{32}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_HEX128 = re.compile(r"[0-9a-f]{128}\Z")


class AnnounceError(ValueError):
    """An announce or will record from the broker failed validation."""


def _signing_bytes(network_id: str, record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "sig"}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return ANNOUNCE_SIGN_PREFIX + network_id.encode() + b"\x00" + hashlib.sha256(canon).digest()


def make_record(identity: Identity, network_id: str, status: str, session: str,
                addresses: tuple[str, ...], transports: tuple[str, ...]) -> bytes:
    rec: dict[str, Any] = {
        "v": ANNOUNCE_VERSION, "status": status, "node_id": identity.node_id,
        "public_key": identity.public_key.hex(), "session": session,
        "addresses": list(addresses) if status == "up" else [],
        "transports": list(transports) if status == "up" else [],
        "ts": int(time.time()),
    }
    rec["sig"] = identity.sign(_signing_bytes(network_id, rec)).hex()
    return json.dumps(rec, separators=(",", ":")).encode()


def transports_of(addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The `transports` list an "up" record names for these addresses."""
    return tuple(sorted({a.split("://", 1)[0] for a in addresses} & KNOWN_TRANSPORTS))


@dataclass(frozen=True)
class Announce:
    status: str              # "up" or "gone"
    node_id: str
    public_key: bytes
    session: str
    addresses: tuple[str, ...]
    transports: tuple[str, ...]
    ts: int = 0


def parse_record(payload: bytes, network_id: str, topic_node_id: str) -> Announce:
    """Strictly validate an announce/will record from the broker (untrusted)."""
    if len(payload) > ANNOUNCE_MAX_BYTES:
        raise AnnounceError("announce too large")
    try:
        rec = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise AnnounceError("announce is not JSON") from None
    if not isinstance(rec, dict) or set(rec) != _KEYS:
        raise AnnounceError("announce has wrong keys")
    if rec["v"] != ANNOUNCE_VERSION or rec["status"] not in ("up", "gone"):
        raise AnnounceError("unknown announce version or status")
    nid, pk, sess, sig = rec["node_id"], rec["public_key"], rec["session"], rec["sig"]
    if not all(isinstance(x, str) for x in (nid, pk, sess, sig)):
        raise AnnounceError("announce field types")
    if not (HEX16.match(nid) and _HEX64.match(pk) and _HEX32.match(sess) and _HEX128.match(sig)):
        raise AnnounceError("announce field format")
    if type(rec["ts"]) is not int:
        raise AnnounceError("announce ts")
    pkb = bytes.fromhex(pk)
    if nid != topic_node_id or node_id_of(pkb) != nid:
        raise AnnounceError("node id does not match topic or public key")
    addrs, trs = rec["addresses"], rec["transports"]
    if not (isinstance(addrs, list) and isinstance(trs, list)) or len(addrs) > MAX_ADDRESSES or len(trs) > 4:
        raise AnnounceError("announce lists")
    for a in addrs:
        if not isinstance(a, str) or len(a) > MAX_ADDRESS_LEN or "://" not in a:
            raise AnnounceError("bad address")
        if a.split("://", 1)[0] not in ADDRESS_SCHEMES:
            raise AnnounceError("unknown address scheme")
    if not all(isinstance(t, str) and t in KNOWN_TRANSPORTS for t in trs):
        raise AnnounceError("unknown transport")
    if rec["status"] == "up" and f"{MQTT_SCHEME}://{nid}" not in addrs:
        raise AnnounceError("announce lacks its own mqtt address")
    if not verify(pkb, bytes.fromhex(sig), _signing_bytes(network_id, rec)):
        raise AnnounceError("bad announce signature")
    return Announce(rec["status"], nid, pkb, sess, tuple(addrs), tuple(trs), rec["ts"])
