"""The one interpreter of a core's actions: the daemon, the simulator and the test harness all
feed events through an `ActionDriver` and carry out what it dispatches to their `Host`.

The driver owns what every runtime must do the same way: call the core with the time, hand each
action to the host in order, and ask the host to wake it at the core's next deadline (with the
tick-rounding fix below). Hosts only say *how* a thing is done (a socket or a virtual link, a
torch worker or a fake hash). Sans-I/O like the rest of `core/`: the clock is passed in.

May import: the rest of `core/` only.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from . import actions as act
from .interface import ProtocolCore
from .messages import Message

# PingWalk.tick tests `now - last_sent >= interval` while next_deadline() returns
# `last_sent + interval`: float rounding can make a tick exactly at the deadline a no-op, which on a
# virtual clock would repeat forever. A deadline already due wakes this much later.
TICK_EPSILON = 1e-6
DUE_SLACK = 1e-9


class Host(Protocol):
    """What a runtime provides. Send methods may return a handle (the daemon: its task)."""

    def send(self, peer: bytes, msg: Message) -> Any: ...

    def send_to(self, address: str, msg: Message) -> Any: ...

    def start_training(self, round_: int, model: bytes) -> None: ...

    def cancel_training(self, round_: int) -> None: ...

    def aggregate(self, a: act.Aggregate) -> None: ...

    def merge(self, a: act.Merge) -> None: ...

    def new_model(self, a: act.NewModel) -> None: ...

    def finished(self, reason: str) -> None: ...

    def event(self, e: act.Event) -> None: ...

    def wake_at(self, t: float) -> None:
        """Call `ActionDriver.tick` at time `t` (or earlier; an early tick is harmless)."""


class ActionDriver:
    def __init__(self, core: ProtocolCore, host: Host, clock: Callable[[], float],
                 observe: Callable[[object], None] | None = None) -> None:
        self.core = core
        self.host = host
        self.clock = clock
        self.observe = observe   # sees every action before it is dispatched (test harnesses)

    # ---- the core's events ----------------------------------------------------------------
    def start(self, bootstrap: list[str]) -> list[Any]:
        return self.run(self.core.start(self.clock(), bootstrap))

    def handle(self, sender: bytes, msg: object) -> list[Any]:
        return self.run(self.core.handle(self.clock(), sender, msg))

    def training_done(self, round_: int, model: bytes) -> list[Any]:
        return self.run(self.core.training_done(self.clock(), round_, model))

    def training_failed(self, round_: int, reason: str) -> list[Any]:
        return self.run(self.core.training_failed(self.clock(), round_, reason))

    def aggregation_done(self, round_: int, model: bytes) -> list[Any]:
        return self.run(self.core.aggregation_done(self.clock(), round_, model))

    def merge_done(self, round_: int, model: bytes) -> list[Any]:
        return self.run(self.core.merge_done(self.clock(), round_, model))

    def peer_failed(self, peer: bytes) -> list[Any]:
        return self.run(self.core.peer_failed(self.clock(), peer))

    def discovered(self, pk: bytes, addresses: tuple[str, ...]) -> list[Any]:
        return self.run(self.core.discovered(self.clock(), pk, addresses))

    def departed(self, pk: bytes) -> list[Any]:
        return self.run(self.core.departed(self.clock(), pk))

    def leave(self) -> list[Any]:
        return self.run(self.core.leave(self.clock()))

    def tick(self) -> list[Any]:
        """A timer fired: run the core's tick if its deadline is due, else wake again later."""
        d = self.core.next_deadline()
        if d is not None and d <= self.clock() + DUE_SLACK:
            return self.run(self.core.tick(self.clock()))
        self.schedule()
        return []

    # ---- dispatch -------------------------------------------------------------------------
    def run(self, actions: Iterable[object]) -> list[Any]:
        """Hand each action to the host, in order; returns what the sends returned."""
        h = self.host
        sent: list[Any] = []
        for a in actions:
            if self.observe is not None:
                self.observe(a)
            if isinstance(a, act.Send):
                sent.append(h.send(a.peer, a.msg))
            elif isinstance(a, act.SendTo):
                sent.append(h.send_to(a.address, a.msg))
            elif isinstance(a, act.StartTraining):
                h.start_training(a.round, a.model)
            elif isinstance(a, act.CancelTraining):
                h.cancel_training(a.round)
            elif isinstance(a, act.Aggregate):
                h.aggregate(a)
            elif isinstance(a, act.Merge):
                h.merge(a)
            elif isinstance(a, act.NewModel):
                h.new_model(a)
            elif isinstance(a, act.Finished):
                h.finished(a.reason)
            elif isinstance(a, act.Event):
                h.event(a)
            else:
                raise TypeError(f"unknown action {a!r}")
        self.schedule()
        return sent

    def schedule(self) -> None:
        d = self.core.next_deadline()
        if d is None:
            return
        now = self.clock()
        self.host.wake_at(d if d > now else now + TICK_EPSILON)
