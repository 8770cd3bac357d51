"""The envelope's head (protocol/SPEC.md section 3): everything before the body, parsed
strictly; shared by `codec.decode` and the streaming `stream.FrameHasher`.

May import: the rest of `wire/` below the codec (errors, identity, reader)."""
from __future__ import annotations

import math
from itertools import pairwise

from gossipnode.wire.errors import MALFORMED, UNKNOWN_VERSION, WireError
from gossipnode.wire.identity import PUBLIC_KEY_LEN
from gossipnode.wire.reader import Reader

VERSION = 4   # v4: MODEL sketch tables (v3: BLAKE3 segment body and model hash; v2: signed records)
MAX_NETWORK_ID_BYTES = 64
MAX_CUTS = 8192          # segment boundaries per frame (4096 tensors' data as segments of their own)
_ENVELOPE_FIELDS = 9
_MAX_ENVELOPE_FIELDS = 64  # a future version may have more; we only need to read its version
_MAX_HEAD = 128 + MAX_NETWORK_ID_BYTES + 9 * MAX_CUTS   # bytes before the body, at most (about 74 KB)


class Head:
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
        n = bin_len(r)
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


def bin_len(r: Reader) -> int:
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
