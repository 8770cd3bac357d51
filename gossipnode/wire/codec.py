"""Envelope encoding, signing, and strict decoding of untrusted frames (protocol/SPEC.md).

envelope = [version, network_id, type, sender, seq, ts, cuts, body, sig]   (msgpack array)
segments = body split at the offsets in cuts (a tensor's data is a segment of its own)
body_hash = BLAKE3(b"gossipnode/v3 body\\0" || u32be(n) || for each segment: u64be(len) || BLAKE3(segment))
sig      = Ed25519(sha256(b"gossipnode/v1\\0" + msgpack([version, network_id, type, sender,
                                                        seq, ts, body_hash])))

Each byte of a body is hashed once per side: the receiver hashes the segments (before it
interprets the body), and a tensor whose data is exactly one segment gets that digest as its
model-hash leaf (wire/tensors.py), so naming a received model costs no second pass.
"""
from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
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
    WRONG_NETWORK,
    WireError,
)
from gossipnode.wire.identity import SIGNATURE_LEN, Identity, verify
from gossipnode.wire.reader import INT63, Reader
from gossipnode.wire.replay import ReplayGuard, SeqCounter
from gossipnode.wire.head import _ENVELOPE_FIELDS, MAX_CUTS, MAX_NETWORK_ID_BYTES, VERSION, Head
from gossipnode.wire.stream import FrameHasher, ReceiveBuffer
from gossipnode.wire.tensors import blake3, leaf_digest

__all__ = [
    "BODY_DOMAIN",
    "MAX_CUTS",
    "MAX_NETWORK_ID_BYTES",
    "SIGN_DOMAIN",
    "VERSION",
    "Envelope",
    "Frame",
    "FrameHasher",
    "MsgType",
    "ReceiveBuffer",
    "ReplayGuard",
    "SeqCounter",
    "WireError",
    "body_digest",
    "decode",
    "encode",
    "encode_frame",
    "seal",
    "seal_frame",
    "signing_digest",
    "type_of",
]

SIGN_DOMAIN = b"gossipnode/v1\x00"
BODY_DOMAIN = b"gossipnode/v3 body\x00"
_U32, _U64 = struct.Struct(">I"), struct.Struct(">Q")


@dataclass(frozen=True)
class Envelope:
    sender: bytes
    seq: int
    ts: float
    type: MsgType
    msg: Message


class Frame:
    """An encoded frame as the buffers that concatenate to it (scatter-gather: large tensor
    buffers are referenced, never copied). len() is its size in bytes; bytes() joins it."""

    __slots__ = ("nbytes", "parts")

    def __init__(self, parts: Sequence[bytes | memoryview]) -> None:
        self.parts = tuple(parts)
        self.nbytes = sum(len(p) for p in self.parts)

    def __len__(self) -> int:
        return self.nbytes

    def __iter__(self) -> Iterator[bytes | memoryview]:
        return iter(self.parts)

    def __bytes__(self) -> bytes:
        return b"".join(self.parts)


def signing_digest(version: int, network_id: str, type_code: int, sender: bytes, seq: int, ts: float,
                   body_hash: bytes) -> bytes:
    """The 32 bytes that are signed. Header fields are re-packed canonically (ts as float64)."""
    header = msgpack.packb([version, network_id, type_code, sender, seq, float(ts), body_hash],
                           use_bin_type=True)
    return hashlib.sha256(SIGN_DOMAIN + header).digest()


def body_digest(segments: Sequence[tuple[int, bytes]]) -> bytes:
    """body_hash from the (length, BLAKE3 digest) of each segment, in order (SPEC §3)."""
    h = blake3(BODY_DOMAIN + _U32.pack(len(segments)))
    h.update(b"".join(_U64.pack(n) + d for n, d in segments))
    return h.digest()


def _segments(body: Sequence[bytes], leaves: Mapping[int, bytes | None]) -> tuple[list[int], list[tuple[int, bytes]]]:
    """Cut offsets and (length, digest) per segment: each chunk named in `leaves` (a large bin
    payload) is a segment of its own (digest reused when given); the chunks between are merged."""
    segs: list[tuple[int, bytes]] = []
    run, run_len = blake3(), 0
    for i, chunk in enumerate(body):
        if i in leaves and len(chunk) and len(segs) + 3 <= MAX_CUTS + 1:
            if run_len:
                segs.append((run_len, run.digest()))
                run, run_len = blake3(), 0
            d = leaves[i]
            segs.append((len(chunk), d if d is not None else leaf_digest(chunk)))
        else:
            run.update(chunk)
            run_len += len(chunk)
    if run_len or not segs:
        segs.append((run_len, run.digest()))
    cuts, pos = [], 0
    for n, _ in segs[:-1]:
        pos += n
        cuts.append(pos)
    return cuts, segs


def seal_frame(identity: Identity, network_id: str, type_code: int, seq: int, ts: float,
               body: Sequence[bytes], version: int = VERSION,
               leaves: Mapping[int, bytes | None] | None = None) -> Frame:
    """Sign and frame an already-encoded body given as chunks, without joining them.

    `leaves`: indices of chunks that are whole bin payloads, each to be a segment of its own,
    with its BLAKE3 digest if already known. Low level: encode_frame() is the normal entry
    point; tests use this (and seal) to build unusual frames.
    """
    cuts, segs = _segments(body, leaves or {})
    sig = identity.sign(signing_digest(version, network_id, type_code, identity.public_key, seq, ts,
                                       body_digest(segs)))
    p = msgpack.Packer(autoreset=False, use_bin_type=True)
    p.pack_array_header(_ENVELOPE_FIELDS)
    for field in (version, network_id, type_code, identity.public_key, seq, float(ts), cuts):
        p.pack(field)
    size = sum(n for n, _ in segs)
    return Frame([p.bytes() + bin_header(size), *body, msgpack.packb(sig, use_bin_type=True)])


def seal(identity: Identity, network_id: str, type_code: int, seq: int, ts: float,
         body: Sequence[bytes], version: int = VERSION,
         leaves: Mapping[int, bytes | None] | None = None) -> bytes:
    """seal_frame() joined into one bytes object."""
    return bytes(seal_frame(identity, network_id, type_code, seq, ts, body, version, leaves))


def _check_header(network_id: str, seq: int, ts: float) -> None:
    if type(network_id) is not str or len(network_id.encode("utf-8")) > MAX_NETWORK_ID_BYTES:
        raise ValueError(f"network_id must be a str of at most {MAX_NETWORK_ID_BYTES} UTF-8 bytes")
    if type(seq) is not int or not 0 <= seq < INT63:
        raise ValueError("seq must be an int in [0, 2**63)")
    if not math.isfinite(ts):
        raise ValueError("ts must be finite")


def encode_frame(identity: Identity, network_id: str, seq: int, ts: float, msg: Message) -> Frame:
    """Signed frame for msg as scatter-gather parts (tensor data referenced, not copied).
    Raises ValueError/TypeError for a message a peer would reject."""
    _check_header(network_id, seq, ts)
    w = Writer()
    code = write_body(w, msg)
    return seal_frame(identity, network_id, code, seq, ts, w.chunks(), leaves=w.leaves())


def encode(identity: Identity, network_id: str, seq: int, ts: float, msg: Message) -> bytes:
    """Signed frame for msg as one bytes object (encode_frame() joined)."""
    return bytes(encode_frame(identity, network_id, seq, ts, msg))


def decode(data: bytes, network_id: str, max_size: int, replay: ReplayGuard | None = None,
           hashed: Mapping[tuple[int, int], bytes] | None = None) -> Envelope:
    """Validate and decode one frame. Raises only WireError; a rejected frame changes nothing.

    Checks, in order: size, envelope structure, version, signature (before the network id or
    the body are interpreted), network id, message type, body schema, replay window.
    A bytearray or memoryview frame is viewed, not copied: the returned tensors are read-only
    views into it, so the caller must not change it afterwards. `hashed`: segment digests by
    (start, end) offset in `data` that a FrameHasher computed over these same bytes as they
    arrived (each segment missing from it is hashed here).
    """
    if hashed is None and type(data) is ReceiveBuffer:
        hashed = data.hashed
    try:
        return _decode(data, network_id, max_size, replay, hashed)
    except WireError:
        raise
    except Exception as e:  # defence in depth: no input may escape as another exception type
        raise WireError(MALFORMED, f"{type(e).__name__}: {e}") from e


def _decode(data: bytes, network_id: str, max_size: int, replay: ReplayGuard | None,
            hashed: Mapping[tuple[int, int], bytes] | None) -> Envelope:
    if isinstance(data, bytes):
        data = memoryview(data)   # tensors view the frame (bytes are immutable): no copy
    elif type(data) is ReceiveBuffer:
        data = data.view().toreadonly()
    elif isinstance(data, bytearray | memoryview):
        # A bytearray (the HTTP receive buffer) is viewed read-only and its tensors stay views
        # into it (zero-copy: a received body costs its size once); a memoryview likewise.
        data = memoryview(data).cast("B").toreadonly()
    else:
        raise WireError(MALFORMED, f"frame must be bytes, not {type(data).__name__}")
    if len(data) > max_size:
        raise WireError(TOO_LARGE, f"{len(data)} bytes > limit {max_size}")

    head = Head(data, len(data))
    r = head.r
    r.pos = head.body_end
    signature = r.bin_exact(SIGNATURE_LEN)
    r.done()

    leaves: dict[tuple[int, int], bytes] = {}
    segs = []
    for a, b in head.segments:
        d = hashed.get((a, b)) if hashed else None
        if d is None:
            d = leaf_digest(data[a:b])
        leaves[(a, b)] = d
        segs.append((b - a, d))
    digest = signing_digest(head.version, head.net, head.type_code, head.sender, head.seq, head.ts,
                            body_digest(segs))
    if not verify(head.sender, signature, digest):
        raise WireError(BAD_SIGNATURE, "signature does not match sender")
    if head.net != network_id:
        raise WireError(WRONG_NETWORK, f"network {head.net!r}, expected {network_id!r}")
    if head.type_code not in READERS:
        raise WireError(UNKNOWN_TYPE, f"message type {head.type_code}")
    msg = read_body(head.type_code, Reader(data, head.body_start, head.body_end, leaves))
    if replay is not None and not replay.check_and_accept(head.sender, head.seq):
        raise WireError(REPLAY, f"seq {head.seq} already seen or below the window")
    return Envelope(head.sender, head.seq, head.ts, MsgType(head.type_code), msg)
