"""wire.chunks: the MQTT chunk codec (SPEC 14.2). Exact bytes, round trips, and one test per
rejection reason (chunks come from peers through the broker and are untrusted)."""
from __future__ import annotations

import random
import struct

import pytest

from gossipnode.transport.mqtt import MqttTransport
from gossipnode.wire.chunks import CHUNK_HEADER, REASONS, Reassembler, decode_chunk, encode_chunks

MID = bytes(range(16))
RT = "mqtt://00112233aabbccdd"
MAX = 1 << 20


def _chunk(index: int, count: int, total: int, data: bytes, reply_to: bytes = b"", magic: bytes = b"GNC1",
           rlen: int | None = None, mid: bytes = MID) -> bytes:
    """A chunk built by hand from the SPEC 14.2 layout (not by the encoder under test)."""
    rlen = len(reply_to) if rlen is None else rlen
    return magic + mid + struct.pack(">IIIH", index, count, total, rlen) + reply_to + data


def test_encoded_bytes_follow_the_spec_layout() -> None:
    # golden: the bytes the transport sent before the codec moved into wire/
    (c,) = encode_chunks(b"hello", RT, 1024, MID)
    assert c.hex() == ("474e4331" "000102030405060708090a0b0c0d0e0f" "00000000" "00000001" "00000005" "0017"
                       + RT.encode().hex() + b"hello".hex())
    assert c == _chunk(0, 1, 5, b"hello", RT.encode())
    two = encode_chunks(b"a" * 1024 + b"b", "", 1024, MID)
    assert two == [_chunk(0, 2, 1025, b"a" * 1024), _chunk(1, 2, 1025, b"b")]


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 5000, 70_001])
def test_round_trip_in_any_order(size: int) -> None:
    rng = random.Random(size)
    frame = rng.randbytes(size)
    chunks = encode_chunks(frame, RT, 1024)
    assert len(chunks) == max(1, -(-size // 1024))
    rng.shuffle(chunks)
    r = Reassembler(max_size=MAX, max_pending_bytes=MAX, timeout=5.0)
    out = [r.add(decode_chunk(c, MAX), 0.0) for c in chunks]
    assert out[:-1] == [None] * (len(chunks) - 1)
    assert out[-1] == (frame, RT)
    assert r.pending_bytes == 0 and not r.partials
    # QoS 1 may deliver again: every copy of a delivered frame's chunks is dropped and counted
    assert all(r.add(decode_chunk(c, MAX), 1.0) is None for c in chunks)
    assert r.duplicates == len(chunks)


def test_empty_reply_to_decodes_as_none() -> None:
    (c,) = encode_chunks(b"x", "", 1024)
    assert decode_chunk(c, MAX).reply_to is None


@pytest.mark.parametrize(("payload", "reason"), [
    (b"", "short_chunk"),
    (_chunk(0, 1, 3, b"abc")[:CHUNK_HEADER.size - 1], "short_chunk"),       # truncated header
    (_chunk(0, 1, 3, b"abc", magic=b"GNC2"), "bad_chunk_magic"),
    (b"\xff" * 64, "bad_chunk_magic"),                                        # garbage
    (_chunk(0, 1, MAX + 1, b""), "too_large"),                                # oversized frame
    (_chunk(0, 0, 10, b""), "bad_chunk_count"),                               # no chunks
    (_chunk(2, 2, 3000, b""), "bad_chunk_count"),                             # index out of range
    (_chunk(0, 4, 3000, b""), "bad_chunk_count"),                             # more chunks than ceil(total / 1 KiB)
    (_chunk(0, 1, 0, b"", b"x" * 257), "bad_chunk_reply_to"),                 # reply-to over 256 bytes
    (_chunk(0, 1, 0, b"", rlen=10), "bad_chunk_reply_to"),                    # reply-to past the end
    (_chunk(0, 1, 1, b"a", b"\xff\xfe"), "bad_chunk_reply_to"),               # not UTF-8
    (_chunk(0, 1, 3, b"ab"), "bad_chunk_length"),                             # truncated data
    (_chunk(0, 1, 3, b"abcd"), "bad_chunk_length"),                           # trailing bytes
    (_chunk(0, 2, 1025, b"x" * 1026), "bad_chunk_length"),                    # more than the whole frame
])
def test_bad_chunk_rejected_with_its_reason(payload: bytes, reason: str) -> None:
    assert reason in REASONS
    with pytest.raises(ValueError) as e:
        decode_chunk(payload, MAX)
    assert str(e.value) == reason


def test_reassembly_rejections_and_bounds() -> None:
    r = Reassembler(max_size=MAX, max_pending_bytes=MAX, timeout=5.0, max_partials=2)
    r.add(decode_chunk(_chunk(0, 2, 2000, b"a" * 1000, mid=b"A" * 16), MAX), 0.0)
    with pytest.raises(ValueError, match="^inconsistent_chunk$"):      # same id, other total
        r.add(decode_chunk(_chunk(1, 2, 3000, b"b" * 10, mid=b"A" * 16), MAX), 0.0)
    r.add(decode_chunk(_chunk(0, 2, 2000, b"a" * 1000, mid=b"B" * 16), MAX), 0.0)
    with pytest.raises(ValueError, match="^reassembly_full$"):         # a third incomplete frame
        r.add(decode_chunk(_chunk(0, 2, 2000, b"a", mid=b"C" * 16), MAX), 0.0)
    # the chunks add up to less than total: dropped when the last one arrives, memory returned
    with pytest.raises(ValueError, match="^bad_chunk_length$"):
        r.add(decode_chunk(_chunk(1, 2, 2000, b"b" * 10, mid=b"A" * 16), MAX), 0.0)
    assert set(r.partials) == {b"B" * 16} and r.pending_bytes == 1000
    # pending bytes over the budget: the frame is dropped, its bytes freed, its id remembered
    small = Reassembler(max_size=MAX, max_pending_bytes=1500, timeout=5.0)
    small.add(decode_chunk(_chunk(0, 2, 2000, b"a" * 1000), MAX), 0.0)
    with pytest.raises(ValueError, match="^reassembly_overflow$"):
        small.add(decode_chunk(_chunk(1, 2, 2000, b"b" * 1000), MAX), 0.0)
    assert small.pending_bytes == 0 and not small.partials
    assert small.add(decode_chunk(_chunk(1, 2, 2000, b"b" * 1000), MAX), 0.0) is None


def test_transport_counts_each_rejected_chunk_by_reason() -> None:
    t = MqttTransport("mqtt://127.0.0.1:9", "00112233aabbccdd", "t", max_size=4096)
    seen: list[str] = []
    t.on_reject = seen.append
    for payload in (b"", b"\x00" * 64, _chunk(0, 1, 5000, b""), _chunk(0, 1, 3, b"ab")):
        t._on_chunk(payload)
    assert seen == ["short_chunk", "bad_chunk_magic", "too_large", "bad_chunk_length"]
    assert t.stats["rejected"] == 4 and t.stats["chunks_in"] == 4 and t.stats["frames_in"] == 0
