"""The surface every protocol core offers its runtime (daemon, simulator, test harness).

A core is a sans-I/O state machine: events in (a method call with the current time `now`),
actions out (a list of `core.actions`). It never reads a clock, never does I/O and never
touches tensors: models are content hashes. `ModestCore` and `GossipPeerCore` implement this
Protocol; `core.driver.ActionDriver` is the one interpreter of what they return.

May import: the rest of `core/` only.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from .actions import Action
from .messages import ModelMsg
from .view import View


@runtime_checkable
class ProtocolCore(Protocol):
    pk: bytes
    index: int           # membership index (bumped at every (re)join or leave), checkpointed
    view: View
    unreachable: dict[bytes, float]   # peers found out of reach (empty where not tracked)

    # ---- queries ----
    @property
    def round(self) -> int: ...

    def role(self) -> str: ...

    def active(self, k: int) -> list[bytes]: ...

    def admissible(self, sender: bytes, msg: ModelMsg) -> str | None:
        """Walk-free role checks of a model message, before anything of it is stored."""

    def is_member(self, pk: bytes) -> bool: ...

    def address_of(self, pk: bytes) -> tuple[str, ...]: ...

    def would_merge(self, sender: bytes, k: int, model: bytes) -> bool:
        """Whether this round model from `sender` would start a lineage merge (SPEC 15.5)."""

    def next_deadline(self) -> float | None: ...

    # ---- events ----
    def start(self, now: float, bootstrap: list[str]) -> list[Action]: ...

    def handle(self, now: float, sender: bytes, msg: object) -> list[Action]: ...

    def tick(self, now: float) -> list[Action]: ...

    def training_done(self, now: float, round_: int, model: bytes) -> list[Action]: ...

    def training_failed(self, now: float, round_: int, reason: str) -> list[Action]: ...

    def aggregation_done(self, now: float, round_: int, model: bytes) -> list[Action]: ...

    def merge_done(self, now: float, round_: int, model: bytes) -> list[Action]: ...

    def peer_failed(self, now: float, peer: bytes) -> list[Action]: ...

    def discovered(self, now: float, pk: bytes, addresses: tuple[str, ...]) -> list[Action]: ...

    def departed(self, now: float, pk: bytes) -> list[Action]: ...

    def leave(self, now: float) -> list[Action]: ...
