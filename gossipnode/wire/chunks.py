"""The chunk framing that carries frames over size-limited channels (protocol/SPEC.md 14.2).

A frame is cut into chunks (``GNC1`` header: message id, index, count, total length, reply-to);
the receiver validates each chunk and reassembles frames with bounded memory, a timeout and
de-duplication by message id. Chunks come from peers (through a broker) and are untrusted:
every rejection raises `ValueError` whose text is one short reason (counted by the transport).

May import: the standard library only (no transport, I/O or clock: `now` is passed in).
"""
from __future__ import annotations

import os
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

CHUNK_MAGIC = b"GNC1"
CHUNK_HEADER = struct.Struct(">4s16sIIIH")   # magic, msg id, index, count, total length, reply-to length
DEFAULT_CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 1024
MAX_REPLY_TO = 256

# every reason decode_chunk and Reassembler.add raise (the transport counts rejections by reason)
REASONS = ("short_chunk", "bad_chunk_magic", "too_large", "bad_chunk_count", "bad_chunk_reply_to",
           "bad_chunk_length", "reassembly_full", "inconsistent_chunk", "reassembly_overflow")


def encode_chunks(frame: bytes, reply_to: str, chunk_size: int, msg_id: bytes | None = None) -> list[bytes]:
    """Cut `frame` into payloads: header + reply-to + at most `chunk_size` frame bytes each."""
    msg_id = msg_id or os.urandom(16)
    rt = reply_to.encode()
    if len(rt) > MAX_REPLY_TO:
        raise ValueError("reply-to address too long")
    count = max(1, -(-len(frame) // chunk_size))
    view = memoryview(frame)
    return [CHUNK_HEADER.pack(CHUNK_MAGIC, msg_id, i, count, len(frame), len(rt)) + rt
            + bytes(view[i * chunk_size:(i + 1) * chunk_size]) for i in range(count)]


@dataclass(frozen=True)
class Chunk:
    msg_id: bytes
    index: int
    count: int
    total: int
    reply_to: str | None
    data: bytes


def decode_chunk(payload: bytes, max_size: int) -> Chunk:
    """Parse and validate one chunk; raises ValueError with a short reason."""
    if len(payload) < CHUNK_HEADER.size:
        raise ValueError("short_chunk")
    magic, msg_id, index, count, total, rlen = CHUNK_HEADER.unpack_from(payload)
    if magic != CHUNK_MAGIC:
        raise ValueError("bad_chunk_magic")
    if total > max_size:
        raise ValueError("too_large")
    if count < 1 or index >= count or count > max(1, -(-total // MIN_CHUNK_SIZE)):
        raise ValueError("bad_chunk_count")
    if rlen > MAX_REPLY_TO or CHUNK_HEADER.size + rlen > len(payload):
        raise ValueError("bad_chunk_reply_to")
    start = CHUNK_HEADER.size + rlen
    try:
        reply_to = payload[CHUNK_HEADER.size:start].decode() or None
    except UnicodeDecodeError:
        raise ValueError("bad_chunk_reply_to") from None
    data = payload[start:]
    if len(data) > total or (count == 1 and len(data) != total):
        raise ValueError("bad_chunk_length")
    return Chunk(msg_id, index, count, total, reply_to, data)


@dataclass
class _Partial:
    total: int
    count: int
    reply_to: str | None
    deadline: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects chunks into frames with bounded memory; drops duplicates and stale partials."""

    def __init__(self, max_size: int, max_pending_bytes: int, timeout: float,
                 max_partials: int = 256, remember: int = 8192) -> None:
        self.max_size = max_size
        self.max_pending_bytes = max_pending_bytes
        self.timeout = timeout
        self.max_partials = max_partials
        self.remember = remember
        self.partials: OrderedDict[bytes, _Partial] = OrderedDict()
        self.pending_bytes = 0
        self.done: OrderedDict[bytes, None] = OrderedDict()   # ids of delivered (or dropped) frames
        self.duplicates = 0
        self.expired = 0

    def _finish(self, msg_id: bytes) -> None:
        self.done[msg_id] = None
        while len(self.done) > self.remember:
            self.done.popitem(last=False)

    def expire(self, now: float) -> int:
        n = 0
        for mid in [m for m, p in self.partials.items() if p.deadline <= now]:
            p = self.partials.pop(mid)
            self.pending_bytes -= p.size
            self._finish(mid)
            n += 1
        self.expired += n
        return n

    def add(self, c: Chunk, now: float) -> tuple[bytes, str | None] | None:
        """Returns (frame, reply_to) when `c` completes a frame; raises ValueError to reject."""
        if c.msg_id in self.done:
            self.duplicates += 1
            return None
        if c.count == 1:
            self._finish(c.msg_id)
            return c.data, c.reply_to
        p = self.partials.get(c.msg_id)
        if p is None:
            if len(self.partials) >= self.max_partials:
                raise ValueError("reassembly_full")
            p = _Partial(c.total, c.count, c.reply_to, now + self.timeout)
            self.partials[c.msg_id] = p
        elif (p.total, p.count) != (c.total, c.count):
            raise ValueError("inconsistent_chunk")
        if c.index in p.chunks:
            self.duplicates += 1
            return None
        if p.size + len(c.data) > p.total or self.pending_bytes + len(c.data) > self.max_pending_bytes:
            self.partials.pop(c.msg_id)
            self.pending_bytes -= p.size
            self._finish(c.msg_id)
            raise ValueError("reassembly_overflow")
        p.chunks[c.index] = c.data
        p.size += len(c.data)
        self.pending_bytes += len(c.data)
        if len(p.chunks) < p.count:
            return None
        self.partials.pop(c.msg_id)
        self.pending_bytes -= p.size
        self._finish(c.msg_id)
        if p.size != p.total:
            raise ValueError("bad_chunk_length")
        return b"".join(p.chunks[i] for i in range(p.count)), p.reply_to
