"""Gossip learning as a sans-I/O state machine (the baseline MoDeST and the variance paper compare to).

Every `interval` a node pushes its current model to one random active peer. A receiver merges
what it received into its own model (the runtime runs the aggregation pipeline with `beta`,
ALGORITHMS.md section 3) and then trains from the merged model ("train after merge"). Models
that arrive while the node is merging or training wait in a small inbox (the newest per
sender) and are merged together as soon as the node is idle.

Like `ModestCore`, it never reads a clock, never does I/O and never touches tensors: models
are content hashes. Events in, actions (`core/actions.py`) out:

    start(now)                         -> first push is scheduled (random phase in [0, interval))
    tick(now)                          -> Send(peer, ModelMsg(kind=GOSSIP)) when a push is due
    handle(now, sender, msg)           -> Merge(round, own, contributions) when idle
    merge_done(now, round, model)      -> NewModel + StartTraining (or only NewModel)
    training_done(now, round, model)   -> NewModel (+ Merge if more models arrived meanwhile)
    peer_failed(now, peer)             -> the peer is skipped for `failure_backoff` seconds
    leave(now)                         -> Advertise(LEAVE) to `leave_fanout` peers, Finished
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .actions import Action, CancelTraining, Event, Finished, Merge, NewModel, Send, StartTraining
from .messages import Advertise, ModelKind, ModelMsg, Status


@dataclass(frozen=True)
class GossipConfig:
    interval: float = 60.0          # seconds between two pushes of one node (paper: 60 s)
    train_after_merge: bool = True  # receiver trains from the merged model
    inbox_size: int = 8             # models buffered while busy (newest per sender; oldest dropped)
    failure_backoff: float = 300.0  # a peer whose delivery failed is not chosen for this long
    leave_fanout: int = 10          # LEAVE adverts sent on a graceful leave
    max_rounds: int | None = None   # Finished once the local model age reaches this

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError("gossip interval must be > 0")
        if self.inbox_size < 1:
            raise ValueError("inbox_size must be >= 1")


class GossipCore:
    """One gossip-learning node. `round` is the model's age: max(own, received) + 1 per merge."""

    def __init__(self, cfg: GossipConfig, self_pk: bytes, peers: list[bytes], initial_model: bytes,
                 rng: random.Random) -> None:
        self.cfg = cfg
        self.pk = self_pk
        self.rng = rng
        self.peers: list[bytes] = [p for p in dict.fromkeys(peers) if p != self_pk]
        self._peer_set = set(self.peers)
        self.failed_until: dict[bytes, float] = {}
        self.model = initial_model
        self.round = 0
        self.busy: str | None = None           # None | "merging" | "training"
        self.busy_round = 0
        self.inbox: dict[bytes, tuple[int, bytes]] = {}   # sender -> (round, model hash)
        self.next_push: float | None = None
        self.pushes = 0
        self.merges = 0
        self.finished = False
        self.now = 0.0

    # ---- membership ------------------------------------------------------------------------
    def add_peer(self, pk: bytes) -> None:
        if pk != self.pk and pk not in self._peer_set:
            self.peers.append(pk)
            self._peer_set.add(pk)

    def remove_peer(self, pk: bytes) -> None:
        if pk in self._peer_set:
            self._peer_set.discard(pk)
            self.peers.remove(pk)
        self.failed_until.pop(pk, None)

    def active_peers(self, now: float) -> list[bytes]:
        return [p for p in self.peers if self.failed_until.get(p, -1.0) <= now]

    # ---- events ----------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        self.now = now
        self.next_push = now + self.rng.uniform(0.0, self.cfg.interval)
        return []

    def next_deadline(self) -> float | None:
        return None if self.finished else self.next_push

    def tick(self, now: float) -> list[Action]:
        self.now = now
        out: list[Action] = []
        if self.finished or self.next_push is None or now < self.next_push:
            return out
        while self.next_push <= now:  # skip missed pushes instead of bursting them
            self.next_push += self.cfg.interval
        peers = self.active_peers(now)
        if not peers:
            out.append(Event(self.round, "no_peer"))
            return out
        peer = peers[self.rng.randrange(len(peers))]
        self.pushes += 1
        out.append(Send(peer, ModelMsg(self.round, ModelKind.GOSSIP, self.model, ())))
        return out

    def handle(self, now: float, sender: bytes, msg: object) -> list[Action]:
        self.now = now
        out: list[Action] = []
        if self.finished or sender == self.pk:
            return out
        self.failed_until.pop(sender, None)
        if isinstance(msg, Advertise):
            if msg.status == Status.LEAVE:
                self.remove_peer(sender)
                self.inbox.pop(sender, None)
            else:
                self.add_peer(sender)
            return out
        if not isinstance(msg, ModelMsg) or msg.kind != ModelKind.GOSSIP:
            out.append(Event(self.round, "ignored", {"type": type(msg).__name__}))
            return out
        self.add_peer(sender)
        self.inbox.pop(sender, None)   # keep only the newest model per sender, newest last
        self.inbox[sender] = (msg.round, msg.model)
        while len(self.inbox) > self.cfg.inbox_size:
            self.inbox.pop(next(iter(self.inbox)))
        self._maybe_merge(out)
        return out

    def merge_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        self.now = now
        out: list[Action] = []
        if self.busy != "merging" or round_ != self.busy_round or self.finished:
            out.append(Event(round_, "merge_stale"))
            return out
        self.model = model
        self.round = round_
        self.merges += 1
        out.append(NewModel(round_, model, "merged"))
        if self.cfg.train_after_merge:
            self.busy = "training"
            out.append(StartTraining(round_, model))
        else:
            self.busy = None
            self._maybe_merge(out)
        return out

    def training_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        self.now = now
        out: list[Action] = []
        if self.busy != "training" or round_ != self.busy_round or self.finished:
            out.append(Event(round_, "training_stale"))
            return out
        self.model = model
        self.busy = None
        out.append(NewModel(round_, model, "trained"))
        if self.cfg.max_rounds is not None and self.round >= self.cfg.max_rounds:
            self.finished = True
            out.append(Finished(f"model age {self.round} reached max_rounds={self.cfg.max_rounds}"))
            return out
        self._maybe_merge(out)
        return out

    def training_failed(self, now: float, round_: int, reason: str) -> list[Action]:
        self.now = now
        out: list[Action] = [Event(round_, "training_failed", {"reason": reason})]
        if self.busy == "training" and round_ == self.busy_round:
            self.busy = None
            self._maybe_merge(out)
        return out

    def peer_failed(self, now: float, peer: bytes) -> list[Action]:
        """The runtime could not deliver to `peer`: do not pick it for a while."""
        self.now = now
        self.failed_until[peer] = now + self.cfg.failure_backoff
        return []

    def leave(self, now: float) -> list[Action]:
        self.now = now
        out: list[Action] = []
        if self.busy == "training":
            out.append(CancelTraining(self.busy_round))
        peers = list(self.peers)
        self.rng.shuffle(peers)
        for p in peers[: self.cfg.leave_fanout]:
            out.append(Send(p, Advertise(self.round, 1, Status.LEAVE)))
        self.finished = True
        self.busy = None
        self.inbox.clear()
        out.append(Finished("left"))
        return out

    # ---- helpers ---------------------------------------------------------------------------
    def _maybe_merge(self, out: list[Action]) -> None:
        if self.busy is not None or not self.inbox or self.finished:
            return
        rnd = max(self.round, *(r for r, _ in self.inbox.values())) + 1
        contributions = tuple((pk, h) for pk, (_, h) in self.inbox.items())
        self.inbox.clear()
        self.busy = "merging"
        self.busy_round = rnd
        out.append(Merge(rnd, self.model, contributions))
