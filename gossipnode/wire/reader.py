"""A strict, schema-driven msgpack reader over an untrusted buffer.

Why not msgpack.unpackb: unpackb builds a generic object tree first, so a hostile frame of N
bytes can make ~N Python objects (an 8x+ memory blow-up) before any schema check runs, and
every bin is copied once for the envelope and once more for the body. This reader asks for
exactly the type the schema expects at each position, so it allocates only what a valid
message needs and copies each tensor's bytes exactly once. It reads standard msgpack
(any int width, str8/16/32, bin8/16/32, array16/32); maps, ext, bool and float32 are never
part of a gossipnode frame and are rejected.
"""
from __future__ import annotations

import struct

from gossipnode.wire.errors import MALFORMED, WireError

_B2, _B4, _B8 = struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")
_S1, _S2, _S4, _S8 = struct.Struct(">b"), struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
_F64 = struct.Struct(">d")
INT63 = 1 << 63


class Reader:
    """Cursor over buf[pos:end]. Every method raises WireError(malformed) on a mismatch."""

    __slots__ = ("buf", "end", "leaves", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0, end: int | None = None,
                 leaves: dict[tuple[int, int], bytes] | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end
        # digests of frame segments by (start, end) in buf, computed by the receiver (codec)
        self.leaves = leaves

    def _fail(self, what: str) -> WireError:
        return WireError(MALFORMED, f"{what} at offset {self.pos}")

    def _take(self, n: int) -> int:
        """Advance by n bytes, return the old position."""
        p = self.pos
        if n > self.end - p:
            raise self._fail(f"truncated (need {n} bytes)")
        self.pos = p + n
        return p

    def _byte(self) -> int:
        if self.pos >= self.end:
            raise self._fail("truncated")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def array(self, max_len: int) -> int:
        """Array header; returns the element count (<= max_len)."""
        b = self._byte()
        if 0x90 <= b <= 0x9F:
            n = b & 0x0F
        elif b == 0xDC:
            n = _B2.unpack_from(self.buf, self._take(2))[0]
        elif b == 0xDD:
            n = _B4.unpack_from(self.buf, self._take(4))[0]
        else:
            self.pos -= 1
            raise self._fail("expected array")
        # every element takes >= 1 byte: reject impossible counts before allocating anything
        if n > max_len or n > self.end - self.pos:
            raise self._fail(f"array of {n} elements (max {max_len})")
        return n

    def array_of(self, n: int) -> None:
        p = self.pos
        if n < 16 and p < self.end and self.buf[p] == 0x90 | n:  # fast path: fixarray
            self.pos = p + 1
            return
        if self.array(n) != n:
            raise self._fail(f"expected array of {n}")

    def integer(self, lo: int = 0, hi: int = INT63) -> int:
        """Integer in [lo, hi), any msgpack int encoding."""
        buf = self.buf
        p = self.pos
        if p >= self.end:
            raise self._fail("truncated")
        b = buf[p]
        self.pos = p + 1
        if b <= 0x7F:  # fast path: positive fixint
            if lo <= b < hi:
                return b
            v = b
        elif b >= 0xE0:
            v = b - 0x100
        elif b == 0xCC:
            v = buf[self._take(1)]
        elif b == 0xCD:
            v = _B2.unpack_from(buf, self._take(2))[0]
        elif b == 0xCE:
            v = _B4.unpack_from(buf, self._take(4))[0]
        elif b == 0xCF:
            v = _B8.unpack_from(buf, self._take(8))[0]
        elif b == 0xD0:
            v = _S1.unpack_from(buf, self._take(1))[0]
        elif b == 0xD1:
            v = _S2.unpack_from(buf, self._take(2))[0]
        elif b == 0xD2:
            v = _S4.unpack_from(buf, self._take(4))[0]
        elif b == 0xD3:
            v = _S8.unpack_from(buf, self._take(8))[0]
        else:
            self.pos -= 1
            raise self._fail("expected integer")
        if not lo <= v < hi:
            raise self._fail(f"integer {v} outside [{lo}, {hi})")
        return v

    def float64(self) -> float:
        if self._byte() != 0xCB:
            self.pos -= 1
            raise self._fail("expected float64")
        return _F64.unpack_from(self.buf, self._take(8))[0]

    def text(self, max_bytes: int) -> str:
        b = self._byte()
        if 0xA0 <= b <= 0xBF:
            n = b & 0x1F
        elif b == 0xD9:
            n = self.buf[self._take(1)]
        elif b == 0xDA:
            n = _B2.unpack_from(self.buf, self._take(2))[0]
        elif b == 0xDB:
            n = _B4.unpack_from(self.buf, self._take(4))[0]
        else:
            self.pos -= 1
            raise self._fail("expected str")
        if n > max_bytes:
            raise self._fail(f"str of {n} bytes (max {max_bytes})")
        p = self._take(n)
        try:
            return str(self.buf[p:p + n], "utf-8")
        except UnicodeDecodeError:
            raise self._fail("invalid UTF-8") from None

    def bin_span(self, max_len: int) -> tuple[int, int]:
        """Bin header; returns (start, end) of its payload in buf without copying."""
        b = self._byte()
        if b == 0xC4:
            n = self.buf[self._take(1)]
        elif b == 0xC5:
            n = _B2.unpack_from(self.buf, self._take(2))[0]
        elif b == 0xC6:
            n = _B4.unpack_from(self.buf, self._take(4))[0]
        else:
            self.pos -= 1
            raise self._fail("expected bin")
        if n > max_len:
            raise self._fail(f"bin of {n} bytes (max {max_len})")
        p = self._take(n)
        return p, p + n

    def bin(self, max_len: int) -> bytes:
        """Bin payload as bytes (one copy)."""
        a, b = self.bin_span(max_len)
        return bytes(self.buf[a:b])

    def bin_exact(self, n: int) -> bytes:
        p = self.pos
        buf = self.buf
        if n < 256 and p + 2 + n <= self.end and buf[p] == 0xC4 and buf[p + 1] == n:  # fast path: bin8
            self.pos = p + 2 + n
            return bytes(buf[p + 2:p + 2 + n])
        v = self.bin(n)
        if len(v) != n:
            raise self._fail(f"expected bin of {n} bytes")
        return v

    def is_nil(self) -> bool:
        """Consume a nil if one is next."""
        if self.pos < self.end and self.buf[self.pos] == 0xC0:
            self.pos += 1
            return True
        return False

    def done(self) -> None:
        if self.pos != self.end:
            raise self._fail(f"{self.end - self.pos} trailing bytes")
