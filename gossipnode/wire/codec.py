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
import mmap
import struct
import sys
from itertools import pairwise
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
    UNKNOWN_VERSION,
    WRONG_NETWORK,
    WireError,
)
from gossipnode.wire.identity import PUBLIC_KEY_LEN, SIGNATURE_LEN, Identity, verify
from gossipnode.wire.reader import INT63, Reader
from gossipnode.wire.replay import ReplayGuard, SeqCounter
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

VERSION = 3   # v3: BLAKE3 segment body hash and model hash (v2: signed membership records)
SIGN_DOMAIN = b"gossipnode/v1\x00"
BODY_DOMAIN = b"gossipnode/v3 body\x00"
MAX_NETWORK_ID_BYTES = 64
MAX_CUTS = 8192          # segment boundaries per frame (4096 tensors' data as segments of their own)
_ENVELOPE_FIELDS = 9
_MAX_ENVELOPE_FIELDS = 64  # a future version may have more; we only need to read its version
_U32, _U64 = struct.Struct(">I"), struct.Struct(">Q")
POPULATE_MIN = 1 << 20   # receive buffers from this size are memory maps populated ahead of the bytes
POPULATE_WINDOW = 16 << 20
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform.startswith("linux") else None)
_MAX_HEAD = 128 + MAX_NETWORK_ID_BYTES + 9 * MAX_CUTS   # bytes before the body, at most (about 74 KB)


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


class _Head:
    """The envelope up to the body, parsed strictly (shared by decode and FrameHasher)."""

    __slots__ = ("body_end", "body_start", "net", "r", "segments", "sender", "seq", "ts", "type_code", "version")

    def __init__(self, data: memoryview, total: int) -> None:
        """Parse from data (which may hold only a prefix of the frame: then `truncated`);
        `total` is the frame's full length."""
        r = Reader(data)
        fields = r.array(_MAX_ENVELOPE_FIELDS)
        if fields < 1:
            raise WireError(MALFORMED, "empty envelope")
        self.version = r.integer()
        if self.version != VERSION:
            raise WireError(UNKNOWN_VERSION, f"version {self.version}, this node speaks {VERSION}")
        if fields != _ENVELOPE_FIELDS:
            raise WireError(MALFORMED, f"envelope has {fields} fields, expected {_ENVELOPE_FIELDS}")
        self.net = r.text(MAX_NETWORK_ID_BYTES)
        self.type_code = r.integer()
        self.sender = r.bin_exact(PUBLIC_KEY_LEN)
        self.seq = r.integer()
        self.ts = r.float64()
        if not math.isfinite(self.ts):
            raise WireError(MALFORMED, "ts is not finite")
        cuts = [r.integer() for _ in range(r.array(MAX_CUTS))]
        # the body's header, then its length checked against the whole frame (not the prefix)
        r.end = total
        n = _bin_len(r)
        start = r.pos
        if n > total - start:
            raise WireError(MALFORMED, f"body of {n} bytes exceeds the frame")
        self.body_start, self.body_end = start, start + n
        bounds = [start]
        for c in cuts:
            if not bounds[-1] - start < c < n:
                raise WireError(MALFORMED, f"cut {c} not increasing inside the body of {n} bytes")
            bounds.append(start + c)
        bounds.append(start + n)
        self.segments = list(pairwise(bounds))
        self.r = r


def _bin_len(r: Reader) -> int:
    """A bin header's payload length (the payload itself may not have arrived yet)."""
    b = r._byte()
    size = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(b)
    if size is None:
        r.pos -= 1
        raise WireError(MALFORMED, f"expected bin at offset {r.pos}")
    if r.pos + size > len(r.buf):
        raise WireError(MALFORMED, f"truncated at offset {r.pos}")
    n = int.from_bytes(r.buf[r.pos:r.pos + size], "big")
    r.pos += size
    return n


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

    head = _Head(data, len(data))
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


class ReceiveBuffer:
    """A transport's receive buffer for one frame, sized from its announced length.

    Large buffers are anonymous memory maps whose pages are provided ahead of the bytes, one
    madvise(MADV_POPULATE_WRITE) call per 16 MiB window (reserve()), instead of one page fault per
    4 KiB as the body arrives (a fresh bytearray cost a third more, measured here). Only pages
    about to be written are provided: a sender that announces a large body and sends nothing
    costs no memory. A transport writes into view() (calling reserve() first), feeds hasher() as
    bytes arrive, calls done(), then hands the buffer to decode(), which takes the digests
    computed on the way instead of hashing the frame again. (Only wire/ fills `hashed`.) The
    decoded tensors view it.
    """

    __slots__ = ("_buf", "_hasher", "_ready", "hashed")

    def __init__(self, n: int) -> None:
        buf: bytearray | mmap.mmap
        if n >= POPULATE_MIN and _MADV_POPULATE_WRITE is not None:
            buf = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            self._ready = 0
        else:
            buf = bytearray(n)
            self._ready = n
        self._buf = buf
        self._hasher: FrameHasher | None = None
        self.hashed: dict[tuple[int, int], bytes] | None = None

    def reserve(self, upto: int) -> None:
        """buf[:upto] is about to be written: provide its pages (and a window ahead) in one call."""
        n = len(self._buf)
        if upto <= self._ready or self._ready >= n:
            return
        page = mmap.PAGESIZE
        end = min(n, -(-max(upto, self._ready + POPULATE_WINDOW) // page) * page)
        try:
            self._buf.madvise(_MADV_POPULATE_WRITE, self._ready, end - self._ready)  # type: ignore[union-attr]
        except (OSError, ValueError):   # an older kernel: ordinary page faults
            self._ready = n
            return
        self._ready = end

    def __len__(self) -> int:
        return len(self._buf)

    def __bytes__(self) -> bytes:
        return bytes(self._buf)

    def view(self) -> memoryview:
        """A writable view of the whole buffer (release it when done writing)."""
        return memoryview(self._buf)

    def hasher(self) -> FrameHasher:
        if self._hasher is None:
            self._hasher = FrameHasher(self._buf)
            self.hashed = self._hasher.digests
        return self._hasher

    def done(self) -> None:
        """No more bytes will arrive: let go of the hasher's view (keeps the digests)."""
        if self._hasher is not None:
            self._hasher.release()
            self._hasher = None


class FrameHasher:
    """Hashes a frame's segments while its bytes arrive (sans-I/O: the transport writes bytes
    into one buffer and calls feed() with how many are there; decode(..., hashed=h.digests)).

    Before the envelope's head has arrived nothing is hashed; a frame whose head is not valid is
    left for decode() to reject (feed never raises). Each byte of a segment is hashed once,
    while it is still in the CPU cache.
    """

    __slots__ = ("_buf", "_hasher", "_i", "_pos", "_retry_at", "_segments", "_total", "digests", "failed")

    def __init__(self, buf: bytearray | memoryview) -> None:
        self._buf = memoryview(buf).cast("B")
        self._total = len(self._buf)
        self._segments: list[tuple[int, int]] | None = None
        self._i = 0            # the segment being hashed
        self._pos = 0          # bytes of the frame hashed or skipped so far
        self._hasher = blake3()
        self._retry_at = 64    # bytes needed before the head is first parsed
        self.digests: dict[tuple[int, int], bytes] = {}
        self.failed = False

    def feed(self, filled: int) -> None:
        """buf[:filled] holds the frame's first bytes (filled only grows)."""
        if self.failed:
            return
        if self._segments is None:
            # the head is parsed again only when the bytes present have doubled: a sender that
            # dribbles its head byte by byte costs O(log) parses, not one per chunk
            if filled < min(self._total, self._retry_at):
                return
            self._retry_at = 2 * filled
            try:
                head = _Head(self._buf[:filled], self._total)
            except Exception:  # noqa: BLE001 - decode() rejects a bad head with its reason
                # parsed again with more bytes until a valid head must have arrived (bounded)
                self.failed = filled >= min(self._total, _MAX_HEAD)
                return
            self._segments = head.segments
            self._pos = head.body_start
        segs = self._segments
        while self._i < len(segs):
            a, b = segs[self._i]
            upto = min(b, filled)
            if upto > self._pos:
                self._hasher.update(self._buf[self._pos:upto])
                self._pos = upto
            if self._pos < b:
                return
            self.digests[(a, b)] = self._hasher.digest()
            self._hasher = blake3()
            self._i += 1

    def release(self) -> None:
        self._buf.release()
