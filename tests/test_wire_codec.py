"""Codec: round trips, every rejection reason, replay window, fuzzing, identity persistence."""
from __future__ import annotations

import os
import random
import stat
from dataclasses import replace

import msgpack
import numpy as np
import pytest
from blake3 import blake3

from gossipnode.core.messages import (
    Advertise,
    HistoryRecord,
    ModelData,
    ModelKind,
    ModelMsg,
    ModelRequest,
    Ping,
    Pong,
    RawTensor,
    Status,
    ViewRecord,
    ViewShare,
)
from gossipnode.wire import (
    REASONS,
    Identity,
    MsgType,
    ReplayGuard,
    SeqCounter,
    WireError,
    decode,
    encode,
    model_hash,
    node_id,
    seal,
    to_raw,
    verify,
)
from gossipnode.wire.codec import ReceiveBuffer, encode_frame

NET = "testnet"
MAX = 1 << 24
ALICE = Identity.from_seed(b"\x07" * 32)
H = bytes(range(32))


def pk(i: int) -> bytes:
    return bytes([i]) * 32


def tensors() -> tuple[RawTensor, ...]:
    rng = np.random.default_rng(1)
    return (to_raw("big", rng.standard_normal((64, 100), dtype=np.float32)),  # > 4 KiB: referenced chunk
            to_raw("small", np.arange(5, dtype=np.int32)),
            to_raw("flag", np.array([True, False])),
            to_raw("empty", np.zeros((0, 3), np.float16)),
            to_raw("scalar", np.array(3.5)))


SIG = bytes(range(64))   # the codec carries record signatures; wire/records.py checks them
VIEW = (ViewRecord(pk(1), 3, 0, Status.JOIN, ("http://a:1", "mqtt://b"), SIG, 2**40 + 7),
        ViewRecord(pk(2), 2**63 - 1, 9, Status.LEAVE, (), SIG[::-1]))
MESSAGES = [
    Advertise(5, 2, Status.JOIN, ("http://127.0.0.1:8470",), SIG),
    Advertise(0, 0, Status.LEAVE, (), SIG),
    ViewShare(7, VIEW),
    ViewShare(0, ()),
    Ping(1, 2**63 - 1),
    Ping(1, 2, VIEW[1]),
    Pong(1, 0),
    Pong(1, 0, VIEW[0]),
    ModelMsg(3, ModelKind.TRAINED, H, VIEW),
    ModelMsg(4, ModelKind.AGGREGATED, H, VIEW, H[::-1], tensors(),
             (HistoryRecord(pk(3), 2, 1, tensors()[:2]), HistoryRecord(pk(4), 1, 5, ()))),
    ModelRequest(H),
    ModelData(H, tensors()),
    ModelData(H, ()),
]


def frame(msg: object = Ping(1, 2), seq: int = 1, ident: Identity = ALICE, net: str = NET) -> bytes:
    return encode(ident, net, seq, 12.5, msg)


def reason(data: object, guard: ReplayGuard | None = None, net: str = NET, max_size: int = MAX) -> str:
    try:
        decode(data, net, max_size, guard)  # type: ignore[arg-type]
    except WireError as e:
        assert e.reason in REASONS
        return e.reason
    return "accept"


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: object) -> None:
    data = encode(ALICE, NET, 99, 1.25, msg)
    env = decode(data, NET, MAX, ReplayGuard())
    assert env.msg == msg
    assert (env.sender, env.seq, env.ts) == (ALICE.public_key, 99, 1.25)
    assert isinstance(env.type, MsgType)
    # the chunked writer produces exactly canonical msgpack
    outer = msgpack.unpackb(data)
    assert msgpack.packb(outer) == data
    assert msgpack.packb(msgpack.unpackb(outer[7])) == outer[7]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = frame()
    assert decode(bytearray(data), NET, MAX).msg == Ping(1, 2)
    assert decode(memoryview(data), NET, MAX).msg == Ping(1, 2)


def test_non_canonical_body_ints_are_accepted() -> None:
    # ints as uint64 / int64 are valid msgpack; only the signature pins the bytes
    body = b"\x93" + b"\xcf" + (5).to_bytes(8, "big") + b"\xd3" + (6).to_bytes(8, "big") + b"\xc0"
    assert decode(seal(ALICE, NET, MsgType.PING, 1, 0.0, [body]), NET, MAX).msg == Ping(5, 6)


# ---------------------------------------------------------------- rejections

def test_too_large() -> None:
    data = frame()
    assert reason(data, max_size=len(data) - 1) == "too_large"
    assert reason(data, max_size=len(data)) == "accept"


def test_malformed_outer() -> None:
    good = frame()
    outer = msgpack.unpackb(good)
    for bad in (b"", b"\xc1", b"\x90", good[:-1], good + b"\x00", msgpack.packb(outer[:7]),
                msgpack.packb(outer[:8]),
                msgpack.packb(outer + [1]), msgpack.packb({"a": 1}), "text", None, 3):
        assert reason(bad) == "malformed", bad
    for i, junk in ((1, b"net"), (2, "5"), (3, b"x" * 31), (4, -1), (4, 2**63), (5, 12), (5, float("nan")),
                    (6, "cuts"), (6, [0]), (6, [2**20]), (6, [3, 2]), (6, [2, 2]), (7, "body"), (8, b"s" * 63)):
        mod = list(outer)
        mod[i] = junk
        assert reason(msgpack.packb(mod)) == "malformed", (i, junk)


def test_unknown_version() -> None:
    # versions 1 (before signed membership records), 2 (sha256 body and model hashes) and 3 (MODEL
    # without sketch tables) are not spoken any more; a future version may change everything after
    # the version field
    for v in (1, 2, 3, 5):
        assert reason(seal(ALICE, NET, MsgType.PING, 1, 0.0, [msgpack.packb([1, 2])], version=v)) == "unknown_version"
    assert reason(msgpack.packb([5, "anything"])) == "unknown_version"
    assert reason(msgpack.packb([2, "v2 had 8 fields", 3, b"k" * 32, 1, 0.0, b"body", b"s" * 64])) == "unknown_version"


def test_bad_signature_checked_before_network_and_body() -> None:
    other = Identity.from_seed(b"\x08" * 32)
    outer = msgpack.unpackb(frame())
    outer[3] = other.public_key  # claim another sender
    assert reason(msgpack.packb(outer)) == "bad_signature"
    outer = msgpack.unpackb(frame(net="elsewhere"))
    outer[7] = b"\xc1garbage"  # wrong network AND garbage body, but the signature fails first
    assert reason(msgpack.packb(outer)) == "bad_signature"
    outer = msgpack.unpackb(frame())
    outer[3] = b"\x00" * 32  # not a valid curve point
    assert reason(msgpack.packb(outer)) == "bad_signature"
    outer = msgpack.unpackb(frame())
    outer[6] = [1]  # the same body cut into other segments: the signed body hash differs
    assert reason(msgpack.packb(outer)) == "bad_signature"


def test_wrong_network_checked_before_type_and_body() -> None:
    assert reason(frame(net="other")) == "wrong_network"
    assert reason(seal(ALICE, "other", 99, 1, 0.0, [b"\xc1"])) == "wrong_network"


def test_unknown_type() -> None:
    for code in (0, 8, 99, 2**62):
        assert reason(seal(ALICE, NET, code, 1, 0.0, [msgpack.packb([1, 2])])) == "unknown_type"


BAD_BODIES = [
    (MsgType.PING, [1]), (MsgType.PING, [1, 2, 3]), (MsgType.PING, [1, 2]),
    (MsgType.PING, [1, 2, 3, 4]), (MsgType.PING, [-1, 2, None]), (MsgType.PING, [2**63, 0, None]),
    (MsgType.PING, [1.0, 2, None]), (MsgType.PING, [True, 2, None]), (MsgType.PING, {"round": 1}),
    (MsgType.ADVERTISE, [1, 2, 2, [], 0, SIG]), (MsgType.ADVERTISE, [1, 2, 0, 0, SIG]),
    (MsgType.ADVERTISE, [1, 2, 0, ["a"] * 9, 0, SIG]), (MsgType.ADVERTISE, [1, 2, 0, ["x" * 257], 0, SIG]),
    (MsgType.ADVERTISE, [1, 2, 0, [b"bin"], 0, SIG]), (MsgType.ADVERTISE, [1, 2, 0, []]),   # v1 layout
    (MsgType.ADVERTISE, [1, 2, 0, [], 0, SIG[:63]]), (MsgType.ADVERTISE, [1, 2, 0, [], 0, None]),
    (MsgType.ADVERTISE, [1, 2, 0, [], -1, SIG]), (MsgType.ADVERTISE, [1, 2, 0, [], SIG]),
    (MsgType.VIEW, [1, [[b"x" * 31, 1, 1, 0, [], 0, SIG]]]), (MsgType.VIEW, [1, [[b"x" * 32, 1, 1, 0, 0, SIG]]]),
    (MsgType.VIEW, [1, [[b"x" * 32, 1, -1, 0, [], 0, SIG]]]), (MsgType.VIEW, [1, [[b"x" * 32, 1, 1, 0, []]]]),
    (MsgType.VIEW, [1, [[b"x" * 32, 1, 1, 0, [], 0, SIG + b"x"]]]),
    (MsgType.VIEW, [1, [[b"x" * 32, 1, 1, 0, [], 2**63, SIG]]]), (MsgType.VIEW, [1, [[b"x" * 32, 1, 1, 0, [], SIG]]]),
    (MsgType.PONG, [1, 2]), (MsgType.PONG, [1, 2, [b"x" * 32, 1, 1, 0, [], SIG]]), (MsgType.PONG, [1, 2, 3]),
    (MsgType.MODEL_REQUEST, [b"x" * 31]), (MsgType.MODEL_REQUEST, [None]), (MsgType.MODEL_REQUEST, ["x" * 32]),
    (MsgType.MODEL_DATA, [H, [["t", "<f4", [2], b"\x00" * 7]]]),       # size mismatch
    (MsgType.MODEL_DATA, [H, [["t", "<u2", [1], b"\x00" * 2]]]),       # dtype not allowed
    (MsgType.MODEL_DATA, [H, [["t", ">f4", [1], b"\x00" * 4]]]),       # big-endian
    (MsgType.MODEL_DATA, [H, [["t", "<f4", [-1], b""]]]),              # negative dim
    (MsgType.MODEL_DATA, [H, [["t", "<f4", [1] * 33, b"\x00" * 4]]]),  # too many dims
    (MsgType.MODEL_DATA, [H, [["t", "<f4", [0, 2**62, 2**62], b""]]]),  # empty, but spans 2^124
    (MsgType.MODEL_DATA, [H, [["t", "|u1", [0, 2**32 + 1], b""]]]),    # empty, spans > 2^32
    (MsgType.MODEL_DATA, [H, [["t", "<f4", [2**33, 0], b""]]]),        # zero last, still spans 2^33
    (MsgType.MODEL, [1, 0, H, [], None, [], [[pk(1), 1, 1, [["h", "<f2", [0, 2**62, 2**62], b""]]]]]),
    (MsgType.MODEL_DATA, [H, [["t", "<f4", [1], b"\x00" * 4]] * 2]),   # duplicate names
    (MsgType.MODEL_DATA, [H, [["t", "|b1", [1], b"\x02"]]]),           # bool not 0/1
    (MsgType.MODEL_DATA, [H, [["t", "<f4", [1], "abcd"]]]),            # data as str
    (MsgType.MODEL, [1, 3, H, [], None, [], []]),                      # bad kind (0-2 exist)
    (MsgType.MODEL, [1, 0, H, [], b"x", [], []]),                      # bad base
    (MsgType.MODEL, [1, 0, H, [], None, [], [[pk(1), 1, 1]]]),         # short history
    (MsgType.MODEL, [1, 0, H, [], None, [], [[pk(1), 1, 1, []]] * 65]),  # too many histories
]


@pytest.mark.parametrize(("code", "body"), BAD_BODIES)
def test_malformed_body(code: int, body: object) -> None:
    assert reason(seal(ALICE, NET, code, 1, 0.0, [msgpack.packb(body)])) == "malformed"


def test_body_trailing_bytes_and_huge_counts() -> None:
    assert reason(seal(ALICE, NET, MsgType.PING, 1, 0.0, [msgpack.packb([1, 2]) + b"\x00"])) == "malformed"
    # array32 header claiming 10**9 view entries: rejected before allocating anything
    body = b"\x92\x01\xdd" + (10**9).to_bytes(4, "big")
    assert reason(seal(ALICE, NET, MsgType.VIEW, 1, 0.0, [body])) == "malformed"


def test_encode_rejects_invalid_messages() -> None:
    bad = [Ping(-1, 0), Ping(1, 2**63), Ping(True, 1), ModelRequest(b"short"), Advertise(1, 1, 5),
           Advertise(1, 1, Status.JOIN, ("a",) * 9), ModelData(H, (RawTensor("t", "<u2", (1,), b"ab"),)),
           ModelData(H, (RawTensor("t", "<f4", (2,), b"abcd"),)), ModelData(H, tensors()[:1] * 2),
           ViewShare(1, (replace(VIEW[0], peer=b"x"),)), ViewShare(1, (replace(VIEW[0], sig=b""),)),
           Advertise(1, 1, Status.JOIN, ()), Pong(1, 1, replace(VIEW[0], sig=SIG[:10]))]
    for msg in bad:
        with pytest.raises((ValueError, TypeError)):
            encode(ALICE, NET, 1, 0.0, msg)
    with pytest.raises(TypeError):
        encode(ALICE, NET, 1, 0.0, object())  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode(ALICE, "n" * 65, 1, 0.0, Ping(1, 1))


# ---------------------------------------------------------------- replay

def test_replay_rejected_and_rejections_do_not_consume_seq() -> None:
    guard = ReplayGuard()
    bad_body = seal(ALICE, NET, MsgType.PING, 5, 0.0, [msgpack.packb([1])])
    assert reason(bad_body, guard) == "malformed"
    assert reason(frame(seq=5, net="other"), guard) == "wrong_network"
    assert len(guard) == 0  # rejected frames left no trace
    assert reason(frame(seq=5), guard) == "accept"
    assert reason(frame(seq=5), guard) == "replay"
    assert reason(frame(Pong(1, 1), seq=5), guard) == "replay"  # seq is per sender, not per message
    other = Identity.from_seed(b"\x09" * 32)
    assert reason(frame(seq=5, ident=other), guard) == "accept"


def test_out_of_order_within_window_accepted_once() -> None:
    guard = ReplayGuard(window=64)
    order = [100, 90, 95, 37, 101, 99, 200, 137, 136]
    expect = ["accept", "accept", "accept", "accept", "accept", "accept", "accept", "accept", "replay"]
    assert [reason(frame(seq=s), guard) for s in order] == expect
    for s in (90, 95, 100, 101, 200, 137):
        assert reason(frame(seq=s), guard) == "replay"
    assert reason(frame(seq=150), guard) == "accept"


def test_replay_guard_window_edges_and_lru() -> None:
    g = ReplayGuard(window=8, max_senders=2)
    g.accept(b"a", 100)
    assert g.check(b"a", 93) and not g.check(b"a", 92) and not g.check(b"a", 100) and g.check(b"a", 10**15)
    g.accept(b"a", 100 + 8)  # jump by exactly the window: old bits all fall out
    assert not g.check(b"a", 100) and g.check(b"a", 101) and not g.check(b"a", 108)
    g.accept(b"b", 1)
    g.accept(b"a", 109)  # a is now most recently used
    g.accept(b"c", 1)  # evicts b
    assert len(g) == 2 and g.check(b"b", 1) and not g.check(b"a", 109) and not g.check(b"c", 1)


def test_seq_counter_monotonic_and_restart_safe() -> None:
    now = [1_000_000]
    c = SeqCounter(lambda: now[0])
    seqs = [c.next() for _ in range(5)]
    assert seqs == [1_000_000 + i for i in range(5)]
    now[0] += 100
    assert c.next() == 1_000_005  # consecutive, whatever the clock does: the window counts frames
    restarted = SeqCounter(lambda: now[0] + 1)
    assert restarted.next() > seqs[-1]
    real = SeqCounter()
    a, b = real.next(), real.next()
    assert b > a > 1_600_000_000 * 10**6


# ---------------------------------------------------------------- fuzzing

def _only_wire_errors(data: object) -> None:
    try:
        decode(data, NET, MAX, ReplayGuard())  # type: ignore[arg-type]
    except WireError as e:
        assert e.reason in REASONS


def test_fuzz_garbage_bitflips_truncations() -> None:
    rnd = random.Random(1234)
    valid = [encode(ALICE, NET, 1, 0.0, m) for m in MESSAGES]
    for _ in range(1500):
        _only_wire_errors(rnd.randbytes(rnd.randrange(0, 300)))
    for _ in range(2500):
        data = bytearray(rnd.choice(valid))
        for _ in range(rnd.randrange(1, 4)):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
        _only_wire_errors(bytes(data))
    for data in valid[:4]:
        for n in range(len(data)):
            _only_wire_errors(data[:n])


def _random_obj(rnd: random.Random, depth: int = 0) -> object:
    choices = [lambda: rnd.randrange(-2**63, 2**64), lambda: rnd.randrange(0, 200), lambda: rnd.random(),
               lambda: rnd.randbytes(rnd.choice([0, 1, 31, 32, 33, 64])), lambda: None, lambda: True,
               lambda: rnd.choice(["", "<f4", "|b1", "t", "\u00e9", "<u2"])]
    if depth < 4:
        choices += [lambda: [_random_obj(rnd, depth + 1) for _ in range(rnd.randrange(0, 8))]] * 3
        choices += [lambda: {"k": _random_obj(rnd, depth + 1)}]
    return rnd.choice(choices)()


def test_fuzz_signed_bodies() -> None:
    """Correctly signed frames with hostile bodies reach the body parser; it must stay strict."""
    rnd = random.Random(99)
    for _ in range(1500):
        code = rnd.randrange(1, 8)
        _only_wire_errors(seal(ALICE, NET, code, 1, 0.0, [msgpack.packb(_random_obj(rnd))]))
    for msg in MESSAGES:
        body = msgpack.unpackb(encode(ALICE, NET, 1, 0.0, msg))[7]
        code = int(msgpack.unpackb(encode(ALICE, NET, 1, 0.0, msg))[2])
        for _ in range(150):
            b = bytearray(body)
            for _ in range(rnd.randrange(1, 3)):
                i = rnd.randrange(len(b))
                b[i] = rnd.randrange(256)
            cut = rnd.choice([len(b), rnd.randrange(len(b) + 1)])
            _only_wire_errors(seal(ALICE, NET, code, 1, 0.0, [bytes(b[:cut])]))


# ---------------------------------------------------------------- identity

def test_identity_load_or_create_persists(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "keys", "node.key")
    a = Identity.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.path.getsize(path) == 32
    b = Identity.load_or_create(path)
    assert a.public_key == b.public_key and len(a.public_key) == 32
    assert os.listdir(os.path.dirname(path)) == ["node.key"]  # no temp files left
    with open(path, "wb") as f:
        f.write(b"short")
    with pytest.raises(ValueError):
        Identity.load_or_create(path)


def test_sign_verify_never_raises() -> None:
    sig = ALICE.sign(b"data")
    assert len(sig) == 64 and verify(ALICE.public_key, sig, b"data")
    assert not verify(ALICE.public_key, sig, b"datA")
    for args in ((b"x", sig, b"data"), (ALICE.public_key, b"x", b"data"), (None, sig, b"d"),
                 (ALICE.public_key, None, b"d"), (b"\x00" * 32, sig, b"data"), ("a" * 32, sig, b"data")):
        assert verify(*args) is False  # type: ignore[arg-type]
    assert Identity.from_seed(b"\x07" * 32).public_key == ALICE.public_key
    assert node_id(ALICE.public_key) == ALICE.node_id and len(ALICE.node_id) == 16
    assert "07" * 4 not in repr(ALICE)
    with pytest.raises(ValueError):
        Identity.from_seed(b"\x00" * 31)


def test_model_hash_names_content() -> None:
    assert model_hash(tensors()) != model_hash(tensors()[::-1])


def test_replay_guard_is_atomic_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    guard = ReplayGuard()
    data = frame(seq=77)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: reason(data, guard), range(64)))
    assert results.count("accept") == 1 and results.count("replay") == 63


# ---------------------------------------------------------------- v3: segments, one hash per side

def _big_model(n: int = 3, size: int = 5000) -> ModelData:
    rng = np.random.default_rng(5)
    ts = tuple(to_raw(f"t{i}", rng.standard_normal(size, dtype=np.float32)) for i in range(n))
    ts += (to_raw("small", np.arange(3, dtype=np.int64)),)
    return ModelData(model_hash(ts), ts)


def test_encode_frame_references_tensor_buffers_and_joins_to_encode() -> None:
    msg = _big_model()
    f = encode_frame(ALICE, NET, 3, 1.0, msg)
    assert bytes(f) == encode(ALICE, NET, 3, 1.0, msg) and len(f) == len(bytes(f))
    for t in msg.tensors[:3]:
        assert any(p is t.data for p in f.parts)   # scatter-gather: never copied into the frame
    assert len(msgpack.unpackb(bytes(f))[6]) == 6   # cuts around each of the 3 large data bins


def test_decoded_tensors_view_the_frame_and_carry_their_segment_digest() -> None:
    msg = _big_model()
    data = encode(ALICE, NET, 3, 1.0, msg)
    env = decode(data, NET, MAX)
    assert env.msg == msg
    for t in env.msg.tensors:
        assert isinstance(t.data, memoryview) and t.data.readonly and t.data.obj is data   # no copy
    assert [t.digest is not None for t in env.msg.tensors] == [True, True, True, False]
    assert all(t.digest == blake3(bytes(t.data)).digest() for t in env.msg.tensors[:3])
    assert model_hash(env.msg.tensors) == msg.model


def test_cuts_not_aligned_with_tensors_still_name_the_model_correctly() -> None:
    """A sender may cut anywhere: the receiver hashes what it got; unaligned tensors are hashed
    separately (a second pass only for them), never named by a digest of other bytes."""
    msg = _big_model()
    body = msgpack.unpackb(encode(ALICE, NET, 3, 1.0, msg))[7]
    chunks = [body[:100], body[100:9000], body[9000:]]
    env = decode(seal(ALICE, NET, MsgType.MODEL_DATA, 4, 1.0, chunks, leaves={1: None}), NET, MAX)
    assert env.msg == msg and all(t.digest is None for t in env.msg.tensors)
    assert model_hash(env.msg.tensors) == msg.model


def test_too_many_cuts_are_malformed_and_a_sender_caps_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from gossipnode.wire import codec
    outer = msgpack.unpackb(frame())
    outer[6] = list(range(1, codec.MAX_CUTS + 2))
    assert reason(msgpack.packb(outer)) == "malformed"
    monkeypatch.setattr(codec, "MAX_CUTS", 4)
    msg = _big_model(5)
    data = encode(ALICE, NET, 5, 1.0, msg)
    assert len(msgpack.unpackb(data)[6]) <= 4
    env = decode(data, NET, MAX)
    assert [t.digest is not None for t in env.msg.tensors][:3] == [True, True, False]   # capped: the rest apart
    assert env.msg == msg and model_hash(env.msg.tensors) == msg.model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frame_hasher_while_bytes_arrive_matches_decode(seed: int) -> None:
    rnd = random.Random(seed)
    for msg in [*MESSAGES, _big_model(), _big_model(5, 300_000)]:
        data = encode(ALICE, NET, 7, 2.0, msg)
        buf = ReceiveBuffer(len(data))
        h = buf.hasher()
        view = buf.view()
        pos = 0
        while pos < len(data):   # arbitrary chunk sizes, as a socket delivers them
            k = min(len(data) - pos, rnd.choice([1, 7, 100, 4096, 65536, 300_000]))
            view[pos:pos + k] = data[pos:pos + k]
            pos += k
            h.feed(pos)
        view.release()
        buf.done()
        assert not h.failed
        head = decode(data, NET, MAX)
        env = decode(buf, NET, MAX)
        assert env.msg == head.msg == msg
        assert len(buf.hashed) == len(msgpack.unpackb(data)[6]) + 1   # every segment hashed on the way
        if isinstance(msg, ModelData) and msg.tensors and msg.tensors[-1].name == "small":
            assert model_hash(env.msg.tensors) == msg.model


def test_frame_hasher_never_raises_and_decode_gives_the_reason() -> None:
    good = frame()
    bad_sig = good[:-1] + bytes([good[-1] ^ 1])
    for data, want in [(b"\xc1" * 50, "malformed"), (good[:-3], "malformed"), (bad_sig, "bad_signature"),
                       (seal(ALICE, NET, MsgType.PING, 1, 0.0, [b"\x93\x01\x02\xc0"], version=2), "unknown_version")]:
        buf = ReceiveBuffer(len(data))
        h = buf.hasher()
        view = buf.view()
        for i in range(len(data)):
            view[i] = data[i]
            h.feed(i + 1)
        view.release()
        buf.done()
        assert reason(buf) == want


def test_receive_buffer_large_is_a_memory_map_populated_as_bytes_arrive() -> None:
    msg = _big_model(2, 400_000)   # 3.2 MB: above POPULATE_MIN
    data = encode(ALICE, NET, 8, 0.0, msg)
    buf = ReceiveBuffer(len(data))
    v = buf.view()
    for pos in range(0, len(data), 100_000):   # as a transport writes it: reserve, then copy
        k = min(100_000, len(data) - pos)
        buf.reserve(pos + k)
        v[pos:pos + k] = data[pos:pos + k]
    buf.reserve(len(data) + 10)   # beyond the end: harmless
    v.release()
    env = decode(buf, NET, MAX)   # no hasher: decode hashes the segments itself
    assert env.msg == msg and bytes(buf) == data and model_hash(env.msg.tensors) == msg.model
    assert not np.frombuffer(env.msg.tensors[0].data, np.float32).flags.writeable


def test_frame_hasher_parses_a_dribbled_head_only_log_times(monkeypatch: pytest.MonkeyPatch) -> None:
    from gossipnode.wire import stream
    calls = [0]
    real = stream.Head

    def counting(*a: object) -> object:
        calls[0] += 1
        return real(*a)

    monkeypatch.setattr(stream, "Head", counting)
    data = encode(ALICE, NET, 9, 0.0, _big_model())
    buf = ReceiveBuffer(len(data))
    h = buf.hasher()
    view = buf.view()
    for i in range(len(data)):   # one byte per chunk
        view[i] = data[i]
        h.feed(i + 1)
    view.release()
    buf.done()
    assert calls[0] <= 4 and not h.failed
    assert decode(buf, NET, MAX).msg == _big_model()
