"""Protocol messages as plain frozen dataclasses.

These are the values the sans-I/O core consumes and produces. `wire/` turns them into
signed bytes and back; nothing here touches bytes from the network.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class Status(IntEnum):
    JOIN = 0
    LEAVE = 1


class ModelKind(IntEnum):
    TRAINED = 0      # a trainer's locally trained model, sent to the aggregators of round k
    AGGREGATED = 1   # an aggregator's result for round k, sent to the trainers of round k
    GOSSIP = 2       # gossip learning: a node's current model pushed to a random peer (core/gossip.py)


@dataclass(frozen=True)
class ViewRecord:
    """A membership record: what `peer` says about itself (SPEC "Membership records").

    `addresses` are the transport URLs where the peer listens (e.g. "http://10.0.0.5:8470").
    `last_active` is the round the peer claims it was last active in; `sig` is the peer's own
    signature over all other fields (core/auth.py): nobody else can make or change a record.
    """
    peer: bytes          # Ed25519 public key, 32 bytes
    last_active: int
    index: int
    status: Status
    addresses: tuple[str, ...] = ()
    sig: bytes = b""     # 64 bytes on the wire
    pow: int = 0         # join proof-of-work nonce for `peer` (core/auth.py pow_bits; not signed)

    def newer_than(self, other: ViewRecord | None) -> bool:
        """The record with the higher (index, last_active) wins."""
        return other is None or (self.index, self.last_active) > (other.index, other.last_active)

    def same_claim(self, other: ViewRecord) -> bool:
        return (self.index, self.last_active, self.status, self.addresses) == \
            (other.index, other.last_active, other.status, other.addresses)


@dataclass(frozen=True)
class RawTensor:
    """A tensor as it travels: little-endian C-order bytes plus dtype code and shape."""
    name: str
    dtype: str           # numpy dtype string, little-endian: "<f4", "<f2", "<f8", "<i8", "<i4", "|u1", "|b1"
    shape: tuple[int, ...]
    data: bytes
    # Cache of the BLAKE3 leaf digest of `data` (protocol/SPEC.md §6), set only by wire/ code that
    # computed it from these exact bytes. Not an init field, so dataclasses.replace() never
    # carries a stale one over to new data; not compared, so equality is about content only.
    digest: bytes | None = field(default=None, init=False, compare=False, repr=False)


@dataclass(frozen=True)
class Advertise:
    """The sender's own signed membership record (the envelope's sender is the record's peer):
    `round` is the record's last_active."""
    round: int
    index: int
    status: Status
    addresses: tuple[str, ...] = ()   # where the sender listens; max 8 URLs of <= 256 chars
    sig: bytes = b""
    pow: int = 0

    def record(self, sender: bytes) -> ViewRecord:
        return ViewRecord(sender, self.round, self.index, self.status, self.addresses, self.sig, self.pow)

    @staticmethod
    def of(rec: ViewRecord) -> Advertise:
        return Advertise(rec.last_active, rec.index, rec.status, rec.addresses, rec.sig, rec.pow)


@dataclass(frozen=True)
class ViewShare:
    """Reply to a JOIN advert: the replier's current round and view, so a joiner learns the network."""
    round: int
    view: tuple[ViewRecord, ...]


@dataclass(frozen=True)
class Ping:
    """`record`: the pinger's own signed record, so a receiver that does not know the pinger yet
    answers at the pinger's own signed address (never at an unsigned hint)."""
    round: int
    nonce: int
    record: ViewRecord | None = None


@dataclass(frozen=True)
class Pong:
    """`round`: the highest round the replier took part in; `record`: the replier's own signed
    record, so activity evidence spreads with proof (None only in tests and old callers)."""
    round: int
    nonce: int
    record: ViewRecord | None = None


@dataclass(frozen=True)
class HistoryRecord:
    """SybilWall gossip: the accumulated update history of `peer`, as last known."""
    peer: bytes
    round: int
    distance: int
    tensors: tuple[RawTensor, ...]


@dataclass(frozen=True)
class SketchTable:
    """SybilWall history sketches that follow identities along the round chain (SPEC §15.2):
    row i of `sketches` (a (len(peers), dims) float tensor) is the count-sketch of the summed
    updates of `peers[i]`, up to and including round `rounds[i]`."""
    peers: tuple[bytes, ...]
    rounds: tuple[int, ...]
    sketches: RawTensor


@dataclass(frozen=True)
class ModelMsg:
    """A model transfer. `model` is the content hash (sha256) of the full model.

    When `base` is set, `tensors` hold `model - base` (a delta); otherwise the full model.
    The core only looks at round, kind, model and view; the runtime resolves the tensors.
    """
    round: int
    kind: ModelKind
    model: bytes
    view: tuple[ViewRecord, ...]
    base: bytes | None = None
    tensors: tuple[RawTensor, ...] = ()
    histories: tuple[HistoryRecord, ...] = field(default=())
    sketches: SketchTable | None = None


@dataclass(frozen=True)
class ModelRequest:
    """Ask a peer for the full model with this content hash (a missing delta base)."""
    model: bytes


@dataclass(frozen=True)
class ModelData:
    """Answer to ModelRequest; `tensors` is empty when the model is not held any more."""
    model: bytes
    tensors: tuple[RawTensor, ...]


Model = tuple[RawTensor, ...]   # a model as it travels: named raw tensors, in order
Message = Advertise | ViewShare | Ping | Pong | ModelMsg | ModelRequest | ModelData


def message_type(msg: object) -> str:
    """A message's type as the daemon's status and the simulator both count it:
    `model_trained`, `model_aggregated`, `model_gossip`, or the class name in lower case."""
    if isinstance(msg, ModelMsg):
        return f"model_{msg.kind.name.lower()}"
    return type(msg).__name__.lower()


message_kind = message_type   # the name the cross-check test uses
