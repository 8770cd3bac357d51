"""What the core asks its runtime to do. The runtime (daemon or simulator) carries these out."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .messages import Message


@dataclass(frozen=True)
class Send:
    peer: bytes
    msg: Message


@dataclass(frozen=True)
class SendTo:
    """Send to an address whose key is not known yet (bootstrap peers)."""
    address: str
    msg: Message


@dataclass(frozen=True)
class StartTraining:
    round: int
    model: bytes


@dataclass(frozen=True)
class CancelTraining:
    round: int


@dataclass(frozen=True)
class Aggregate:
    round: int
    contributions: tuple[tuple[bytes, bytes], ...]   # (sender pk, model hash)


@dataclass(frozen=True)
class Merge:
    """Merge received models into the node's own model `own` (pipeline with beta), then report the
    result with `merge_done`: gossip learning, and MoDeST's lineage merge after a partition."""
    round: int
    own: bytes
    contributions: tuple[tuple[bytes, bytes], ...]   # (sender pk, model hash)
    beta: float | None = None   # weight of `own` (None: the configured --beta); MoDeST lineage merges set it


@dataclass(frozen=True)
class NewModel:
    """A newer round model is held (received as trainer or produced as aggregator): evaluate it."""
    round: int
    model: bytes
    role: str


@dataclass(frozen=True)
class Finished:
    """The node has done its last round (max_rounds reached or left)."""
    reason: str


@dataclass(frozen=True)
class Event:
    """Something worth recording in /v1/rounds and the log."""
    round: int
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


Action = Send | SendTo | StartTraining | CancelTraining | Aggregate | Merge | NewModel | Finished | Event
