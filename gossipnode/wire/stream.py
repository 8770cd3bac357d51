"""Receiving a frame at memory speed: the transport's receive buffer (memory maps populated
ahead of the bytes) and the hasher that hashes each segment once while the bytes arrive.

May import: wire.head, wire.tensors (the hash)."""
from __future__ import annotations

import mmap
import sys

from gossipnode.wire.head import _MAX_HEAD, Head
from gossipnode.wire.tensors import blake3

POPULATE_MIN = 1 << 20   # receive buffers from this size are memory maps populated ahead of the bytes
POPULATE_WINDOW = 16 << 20
_MADV_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform.startswith("linux") else None)


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
                head = Head(self._buf[:filled], self._total)
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
