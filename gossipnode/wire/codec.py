"""Envelope encoding, signing, and strict decoding of untrusted frames (protocol/SPEC.md).

envelope = [version, network_id, type, sender, seq, ts, body, sig]   (msgpack array)
sig      = Ed25519(sha256(b"gossipnode/v1\\0" + msgpack([version, network_id, type, sender,
                                                        seq, ts, sha256(body)])))
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack

from gossipnode.core.messages import Message
from gossipnode.wire.bodies import READERS, MsgType, Writer, bin_header, read_body, type_of, write_body
from gossipnode.wire.errors import (
    BAD_SIGNATURE,
    MALFORMED,
    REPLAY,
    TOO_LARGE,
    UNKNOWN_TYPE,
    UNKNOWN_VERSION,
    WRONG_NETWORK,
    WireError,
)
from gossipnode.wire.identity import PUBLIC_KEY_LEN, SIGNATURE_LEN, Identity, verify
from gossipnode.wire.reader import INT63, Reader
from gossipnode.wire.replay import ReplayGuard, SeqCounter

__all__ = [
    "MAX_NETWORK_ID_BYTES",
    "SIGN_DOMAIN",
    "VERSION",
    "Envelope",
    "MsgType",
    "ReplayGuard",
    "SeqCounter",
    "WireError",
    "decode",
    "encode",
    "seal",
    "signing_digest",
    "type_of",
]

VERSION = 2   # v2: signed membership records (VIEW records, ADVERTISE, PONG layouts)
SIGN_DOMAIN = b"gossipnode/v1\x00"
MAX_NETWORK_ID_BYTES = 64
_ENVELOPE_FIELDS = 8
_MAX_ENVELOPE_FIELDS = 64  # a future version may have more; we only need to read its version


@dataclass(frozen=True)
class Envelope:
    sender: bytes
    seq: int
    ts: float
    type: MsgType
    msg: Message


def signing_digest(version: int, network_id: str, type_code: int, sender: bytes, seq: int, ts: float,
                   body_hash: bytes) -> bytes:
    """The 32 bytes that are signed. Header fields are re-packed canonically (ts as float64)."""
    header = msgpack.packb([version, network_id, type_code, sender, seq, float(ts), body_hash],
                           use_bin_type=True)
    return hashlib.sha256(SIGN_DOMAIN + header).digest()


def seal(identity: Identity, network_id: str, type_code: int, seq: int, ts: float,
         body: Sequence[bytes], version: int = VERSION) -> bytes:
    """Sign and frame an already-encoded body given as chunks (concatenated exactly once here).

    Low level: encode() is the normal entry point; tests use this to build unusual frames.
    """
    h = hashlib.sha256()
    size = 0
    for chunk in body:
        h.update(chunk)
        size += len(chunk)
    sig = identity.sign(signing_digest(version, network_id, type_code, identity.public_key, seq, ts,
                                       h.digest()))
    p = msgpack.Packer(autoreset=False, use_bin_type=True)
    p.pack_array_header(_ENVELOPE_FIELDS)
    for field in (version, network_id, type_code, identity.public_key, seq, float(ts)):
        p.pack(field)
    return b"".join([p.bytes(), bin_header(size), *body, msgpack.packb(sig, use_bin_type=True)])


def encode(identity: Identity, network_id: str, seq: int, ts: float, msg: Message) -> bytes:
    """Signed frame for msg. Raises ValueError/TypeError for a message a peer would reject."""
    if type(network_id) is not str or len(network_id.encode("utf-8")) > MAX_NETWORK_ID_BYTES:
        raise ValueError(f"network_id must be a str of at most {MAX_NETWORK_ID_BYTES} UTF-8 bytes")
    if type(seq) is not int or not 0 <= seq < INT63:
        raise ValueError("seq must be an int in [0, 2**63)")
    if not math.isfinite(ts):
        raise ValueError("ts must be finite")
    w = Writer()
    code = write_body(w, msg)
    return seal(identity, network_id, code, seq, ts, w.chunks())


def decode(data: bytes, network_id: str, max_size: int, replay: ReplayGuard | None = None) -> Envelope:
    """Validate and decode one frame. Raises only WireError; a rejected frame changes nothing.

    Checks, in order: size, envelope structure, version, signature (before the network id or
    the body are interpreted), network id, message type, body schema, replay window.
    """
    try:
        return _decode(data, network_id, max_size, replay)
    except WireError:
        raise
    except Exception as e:  # defence in depth: no input may escape as another exception type
        raise WireError(MALFORMED, f"{type(e).__name__}: {e}") from e


def _decode(data: bytes, network_id: str, max_size: int, replay: ReplayGuard | None) -> Envelope:
    if isinstance(data, bytearray | memoryview):
        # A bytearray (the HTTP receive buffer) is viewed read-only and its tensors stay views
        # into it (zero-copy: a received body costs its size once); a memoryview likewise.
        data = memoryview(data).cast("B").toreadonly()
    elif not isinstance(data, bytes):
        raise WireError(MALFORMED, f"frame must be bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise WireError(TOO_LARGE, f"{len(data)} bytes > limit {max_size}")

    r = Reader(data)
    fields = r.array(_MAX_ENVELOPE_FIELDS)
    if fields < 1:
        raise WireError(MALFORMED, "empty envelope")
    version = r.integer()
    if version != VERSION:
        raise WireError(UNKNOWN_VERSION, f"version {version}, this node speaks {VERSION}")
    if fields != _ENVELOPE_FIELDS:
        raise WireError(MALFORMED, f"envelope has {fields} fields, expected {_ENVELOPE_FIELDS}")
    net = r.text(MAX_NETWORK_ID_BYTES)
    type_code = r.integer()
    sender = r.bin_exact(PUBLIC_KEY_LEN)
    seq = r.integer()
    ts = r.float64()
    if not math.isfinite(ts):
        raise WireError(MALFORMED, "ts is not finite")
    body_start, body_end = r.bin_span(len(data))
    signature = r.bin_exact(SIGNATURE_LEN)
    r.done()

    body_hash = hashlib.sha256(memoryview(data)[body_start:body_end]).digest()
    digest = signing_digest(version, net, type_code, sender, seq, ts, body_hash)
    if not verify(sender, signature, digest):
        raise WireError(BAD_SIGNATURE, "signature does not match sender")
    if net != network_id:
        raise WireError(WRONG_NETWORK, f"network {net!r}, expected {network_id!r}")
    if type_code not in READERS:
        raise WireError(UNKNOWN_TYPE, f"message type {type_code}")
    msg = read_body(type_code, Reader(data, body_start, body_end))
    if replay is not None and not replay.check_and_accept(sender, seq):
        raise WireError(REPLAY, f"seq {seq} already seen or below the window")
    return Envelope(sender, seq, ts, MsgType(type_code), msg)
