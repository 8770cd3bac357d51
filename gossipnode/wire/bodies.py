"""Per-type body layouts (protocol/SPEC.md "Message bodies"): write with validation, read strictly.

Each body is a msgpack array of the message's fields in declaration order. Writers raise
ValueError for a message that could not be decoded by a peer; readers raise WireError.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import IntEnum

import msgpack

from gossipnode.core.messages import (
    Advertise,
    HistoryRecord,
    Message,
    ModelData,
    ModelKind,
    ModelMsg,
    ModelRequest,
    Ping,
    Pong,
    RawTensor,
    SketchTable,
    Status,
    ViewRecord,
    ViewShare,
)
from gossipnode.wire.errors import MALFORMED, WireError
from gossipnode.wire.reader import INT63, Reader
from gossipnode.wire.tensors import MAX_NAME_BYTES, MAX_NDIM, leaf_of, tensor_problem


class MsgType(IntEnum):
    ADVERTISE = 1
    VIEW = 2
    PING = 3
    PONG = 4
    MODEL = 5
    MODEL_REQUEST = 6
    MODEL_DATA = 7
    # 8 is reserved for HISTORY


KEY_LEN = 32
HASH_LEN = 32
SIG_LEN = 64                  # membership record signatures (wire/records.py)
MAX_VIEW_ENTRIES = 65536
MAX_ADDRESSES = 8             # transport URLs per peer
MAX_ADDRESS_BYTES = 256
MAX_TENSORS = 4096            # per tensor list
MAX_HISTORIES = 64            # per MODEL message
MAX_SKETCH_ENTRIES = 1024     # rows of a MODEL's sketch table (SPEC §15.2)
MAX_TENSORS_PER_MESSAGE = 65536  # all lists of one message together (bounds memory per frame)
_MAX_DTYPE_BYTES = 8
_INLINE_BIN = 4096            # smaller bins are copied into the packer; larger ones are referenced
LEAF_MIN = _INLINE_BIN        # referenced bins are their own frame segments (SPEC §3)

_STATUS = tuple(Status)
_KIND = tuple(ModelKind)
_TYPE_OF: dict[type, MsgType] = {
    Advertise: MsgType.ADVERTISE, ViewShare: MsgType.VIEW, Ping: MsgType.PING, Pong: MsgType.PONG,
    ModelMsg: MsgType.MODEL, ModelRequest: MsgType.MODEL_REQUEST, ModelData: MsgType.MODEL_DATA,
}


def type_of(msg: Message) -> MsgType:
    try:
        return _TYPE_OF[type(msg)]
    except KeyError:
        raise TypeError(f"not a wire message: {type(msg).__name__}") from None


# ---------------------------------------------------------------- writing

def bin_header(n: int) -> bytes:
    """Canonical (shortest) msgpack bin header; msgpack's Packer has no public one."""
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")  # > 4 GiB raises OverflowError: no frame is that big


class Writer:
    """msgpack output as a list of chunks, so large tensor buffers are referenced, not copied.

    The chunks concatenate to exactly what msgpack.packb would produce for the same structure.
    Every referenced payload (a bin of >= LEAF_MIN bytes) is one chunk of its own; `leaves()`
    maps its chunk index to its leaf digest (None: not known yet), so the frame can make it a
    segment of its own (SPEC §3) and reuse the digest the model hash already computed.
    """

    def __init__(self) -> None:
        self._p = msgpack.Packer(autoreset=False, use_bin_type=True)
        self._chunks: list[bytes] = []
        self._leaves: dict[int, bytes | None] = {}

    def pack(self, obj: object) -> None:
        self._p.pack(obj)

    def array(self, n: int) -> None:
        self._p.pack_array_header(n)

    def bin(self, data: bytes, digest: bytes | None = None) -> None:
        if len(data) < _INLINE_BIN:
            self._p.pack(bytes(data) if type(data) is memoryview else data)
        else:
            self._flush()
            self._chunks.append(bin_header(len(data)))
            self._leaves[len(self._chunks)] = digest
            self._chunks.append(data)

    def _flush(self) -> None:
        head = self._p.bytes()
        if head:
            self._chunks.append(head)
        self._p.reset()

    def chunks(self) -> list[bytes]:
        self._flush()
        return self._chunks

    def leaves(self) -> dict[int, bytes | None]:
        return self._leaves


def _uint(v: object, what: str) -> int:
    if type(v) is not int or not 0 <= v < INT63:
        raise ValueError(f"{what} must be an int in [0, 2**63), got {v!r}")
    return v


def _hash(v: object, what: str) -> bytes:
    if type(v) is not bytes or len(v) != HASH_LEN:
        raise ValueError(f"{what} must be {HASH_LEN} bytes")
    return v


def _enum(v: object, enum: type[IntEnum], what: str) -> int:
    if not isinstance(v, enum):
        raise TypeError(f"{what} must be a {enum.__name__}, got {v!r}")
    return int(v)


def _count(items: Sequence[object], limit: int, what: str) -> int:
    if not isinstance(items, tuple | list):
        raise TypeError(f"{what} must be a tuple")
    if len(items) > limit:
        raise ValueError(f"{what}: {len(items)} entries, max {limit}")
    return len(items)


def _addresses(v: Sequence[str]) -> list[str]:
    _count(v, MAX_ADDRESSES, "addresses")
    for a in v:
        if type(a) is not str or len(a.encode("utf-8")) > MAX_ADDRESS_BYTES:
            raise ValueError(f"addresses must be str of at most {MAX_ADDRESS_BYTES} UTF-8 bytes")
    return list(v)


def _sig(v: object) -> bytes:
    if type(v) is not bytes or len(v) != SIG_LEN:
        raise ValueError(f"a record signature must be {SIG_LEN} bytes")
    return v


def _record_row(rec: ViewRecord) -> list:
    if type(rec) is not ViewRecord:
        raise ValueError("view entries must be ViewRecord")
    return [_hash(rec.peer, "view peer"), _uint(rec.last_active, "last_active"),
            _uint(rec.index, "index"), _enum(rec.status, Status, "status"),
            _addresses(rec.addresses), _uint(rec.pow, "pow"), _sig(rec.sig)]


def _write_view(w: Writer, view: Sequence[ViewRecord]) -> None:
    _count(view, MAX_VIEW_ENTRIES, "view")
    w.pack([_record_row(rec) for rec in view])  # one C-level pack for the whole view


def _write_tensors(w: Writer, tensors: Sequence[RawTensor], budget: list[int]) -> None:
    w.array(_count(tensors, MAX_TENSORS, "tensors"))
    budget[0] -= len(tensors)
    if budget[0] < 0:
        raise ValueError(f"more than {MAX_TENSORS_PER_MESSAGE} tensors in one message")
    names: set[str] = set()
    for t in tensors:
        # memoryview: a received tensor still viewing its (read-only) frame buffer
        if type(t) is not RawTensor or type(t.data) not in (bytes, memoryview):
            raise ValueError("tensors must be RawTensor with bytes data")
        problem = tensor_problem(t.name, t.dtype, t.shape, len(t.data))
        if problem:
            raise ValueError(problem)
        if t.name in names:
            raise ValueError(f"duplicate tensor name {t.name!r}")
        names.add(t.name)
        w.array(4)
        w.pack(t.name)
        w.pack(t.dtype)
        w.pack(list(t.shape))
        w.bin(t.data, leaf_of(t) if len(t.data) >= _INLINE_BIN else None)


def write_body(w: Writer, msg: Message) -> MsgType:
    """Append msg's body to w; returns its type code. Raises ValueError/TypeError if invalid."""
    kind = type_of(msg)
    budget = [MAX_TENSORS_PER_MESSAGE]
    if isinstance(msg, Advertise):
        w.pack([_uint(msg.round, "round"), _uint(msg.index, "index"), _enum(msg.status, Status, "status"),
                _addresses(msg.addresses), _uint(msg.pow, "pow"), _sig(msg.sig)])
    elif isinstance(msg, ViewShare):
        w.array(2)
        w.pack(_uint(msg.round, "round"))
        _write_view(w, msg.view)
    elif isinstance(msg, Ping | Pong):
        w.pack([_uint(msg.round, "round"), _uint(msg.nonce, "nonce"),
                None if msg.record is None else _record_row(msg.record)])
    elif isinstance(msg, ModelMsg):
        w.array(8)
        w.pack(_uint(msg.round, "round"))
        w.pack(_enum(msg.kind, ModelKind, "kind"))
        w.pack(_hash(msg.model, "model"))
        _write_view(w, msg.view)
        w.pack(None if msg.base is None else _hash(msg.base, "base"))
        _write_tensors(w, msg.tensors, budget)
        w.array(_count(msg.histories, MAX_HISTORIES, "histories"))
        for h in msg.histories:
            if type(h) is not HistoryRecord:
                raise ValueError("histories must be HistoryRecord")
            w.array(4)
            w.pack(_hash(h.peer, "history peer"))
            w.pack(_uint(h.round, "history round"))
            w.pack(_uint(h.distance, "history distance"))
            _write_tensors(w, h.tensors, budget)
        _write_sketches(w, msg.sketches, budget)
    elif isinstance(msg, ModelRequest):
        w.pack([_hash(msg.model, "model")])
    elif isinstance(msg, ModelData):
        w.array(2)
        w.pack(_hash(msg.model, "model"))
        _write_tensors(w, msg.tensors, budget)
    return kind


# ---------------------------------------------------------------- reading

def _read_addresses(r: Reader) -> tuple[str, ...]:
    n = r.array(MAX_ADDRESSES)
    return tuple(r.text(MAX_ADDRESS_BYTES) for _ in range(n)) if n else ()


def _read_record(r: Reader) -> ViewRecord:
    r.array_of(7)
    peer, last, index, status, addresses = (r.bin_exact(KEY_LEN), r.integer(), r.integer(),
                                            _STATUS[r.integer(0, len(_STATUS))], _read_addresses(r))
    pow_ = r.integer()
    return ViewRecord(peer, last, index, status, addresses, r.bin_exact(SIG_LEN), pow_)


def _write_sketches(w: Writer, t: SketchTable | None, budget: list[int]) -> None:
    if t is None:
        w.pack(None)
        return
    if type(t) is not SketchTable or len(t.peers) != len(t.rounds):
        raise ValueError("sketches must be a SketchTable with one round per peer")
    _count(t.peers, MAX_SKETCH_ENTRIES, "sketch table")
    w.array(3)
    w.pack([_hash(p, "sketch peer") for p in t.peers])
    w.pack([_uint(x, "sketch round") for x in t.rounds])
    _write_tensors(w, (t.sketches,), budget)


def _read_sketches(r: Reader, budget: list[int]) -> SketchTable | None:
    if r.is_nil():
        return None
    r.array_of(3)
    peers = tuple(r.bin_exact(KEY_LEN) for _ in range(r.array(MAX_SKETCH_ENTRIES)))
    rounds = tuple(r.integer() for _ in range(r.array(MAX_SKETCH_ENTRIES)))
    ts = _read_tensors(r, budget)
    if len(ts) != 1 or len(rounds) != len(peers):
        raise WireError(MALFORMED, "a sketch table needs one tensor and one round per peer")
    return SketchTable(peers, rounds, ts[0])


def _read_view(r: Reader) -> tuple[ViewRecord, ...]:
    # the hot loop of VIEW and MODEL decoding: bound methods hoisted out of the loop
    array_of, key, integer, n_status = r.array_of, r.bin_exact, r.integer, len(_STATUS)
    out = []
    for _ in range(r.array(MAX_VIEW_ENTRIES)):
        array_of(7)
        peer, last, index, status, addresses, pow_ = (key(KEY_LEN), integer(), integer(),
                                                      _STATUS[integer(0, n_status)], _read_addresses(r),
                                                      integer())
        out.append(ViewRecord(peer, last, index, status, addresses, key(SIG_LEN), pow_))
    return tuple(out)


def _read_tensors(r: Reader, budget: list[int]) -> tuple[RawTensor, ...]:
    n = r.array(MAX_TENSORS)
    budget[0] -= n
    if budget[0] < 0:
        raise WireError(MALFORMED, f"more than {MAX_TENSORS_PER_MESSAGE} tensors in one message")
    out = []
    names: set[str] = set()
    for _ in range(n):
        r.array_of(4)
        name = r.text(MAX_NAME_BYTES)
        dtype = r.text(_MAX_DTYPE_BYTES)
        shape = tuple(r.integer() for _ in range(r.array(MAX_NDIM)))
        start, end = r.bin_span(r.end)
        problem = tensor_problem(name, dtype, shape, end - start)  # checked before the copy
        if problem:
            raise WireError(MALFORMED, problem)
        if name in names:
            raise WireError(MALFORMED, f"duplicate tensor name {name!r}")
        names.add(name)
        data = r.buf[start:end]
        if type(data) is not memoryview or not data.readonly:
            data = bytes(data)  # a copy only for a writable buffer (decode() views frames read-only)
        if dtype == "|b1" and bytes(data).translate(None, b"\x00\x01"):
            raise WireError(MALFORMED, f"tensor {name!r}: bool bytes must be 0 or 1")
        t = RawTensor(name, dtype, shape, data)
        if r.leaves and (d := r.leaves.get((start, end))) is not None:
            object.__setattr__(t, "digest", d)   # computed by this receiver over these very bytes
        out.append(t)
    return tuple(out)


def _read_advertise(r: Reader) -> Advertise:
    r.array_of(6)
    last, index, status, addresses, pow_ = (r.integer(), r.integer(), _STATUS[r.integer(0, len(_STATUS))],
                                            _read_addresses(r), r.integer())
    return Advertise(last, index, status, addresses, r.bin_exact(SIG_LEN), pow_)


def _read_viewshare(r: Reader) -> ViewShare:
    r.array_of(2)
    return ViewShare(r.integer(), _read_view(r))


def _read_ping(r: Reader) -> Ping:
    r.array_of(3)
    rnd, nonce = r.integer(), r.integer()
    return Ping(rnd, nonce, None if r.is_nil() else _read_record(r))


def _read_pong(r: Reader) -> Pong:
    r.array_of(3)
    rnd, nonce = r.integer(), r.integer()
    return Pong(rnd, nonce, None if r.is_nil() else _read_record(r))


def _read_model(r: Reader) -> ModelMsg:
    r.array_of(8)
    budget = [MAX_TENSORS_PER_MESSAGE]
    rnd = r.integer()
    kind = _KIND[r.integer(0, len(_KIND))]
    model = r.bin_exact(HASH_LEN)
    view = _read_view(r)
    base = None if r.is_nil() else r.bin_exact(HASH_LEN)
    tensors = _read_tensors(r, budget)
    histories = []
    for _ in range(r.array(MAX_HISTORIES)):
        r.array_of(4)
        histories.append(HistoryRecord(r.bin_exact(KEY_LEN), r.integer(), r.integer(),
                                       _read_tensors(r, budget)))
    return ModelMsg(rnd, kind, model, view, base, tensors, tuple(histories), _read_sketches(r, budget))


def _read_model_request(r: Reader) -> ModelRequest:
    r.array_of(1)
    return ModelRequest(r.bin_exact(HASH_LEN))


def _read_model_data(r: Reader) -> ModelData:
    r.array_of(2)
    return ModelData(r.bin_exact(HASH_LEN), _read_tensors(r, [MAX_TENSORS_PER_MESSAGE]))


READERS: dict[int, Callable[[Reader], Message]] = {
    MsgType.ADVERTISE: _read_advertise,
    MsgType.VIEW: _read_viewshare,
    MsgType.PING: _read_ping,
    MsgType.PONG: _read_pong,
    MsgType.MODEL: _read_model,
    MsgType.MODEL_REQUEST: _read_model_request,
    MsgType.MODEL_DATA: _read_model_data,
}


def read_body(kind: int, r: Reader) -> Message:
    """Strictly read a body of type `kind` spanning all of r. Raises WireError(malformed)."""
    msg = READERS[kind](r)
    r.done()
    return msg
