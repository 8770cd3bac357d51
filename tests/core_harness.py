"""A deterministic, zero-I/O harness driving many ModestCore instances on a virtual clock.

Training and aggregation complete after fixed virtual delays; models are fake hashes.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import random

from gossipnode.core.actions import (
    Aggregate, CancelTraining, Event, Finished, Merge, NewModel, Send, SendTo, StartTraining,
)
from gossipnode.core.config import ModestConfig
from gossipnode.core.modest import ModestCore


def pk_of(i: int) -> bytes:
    return hashlib.sha256(f"node-{i}".encode()).digest()


class CoreNet:
    def __init__(self, n: int, cfg: ModestConfig, latency: float = 0.01, train_time: float = 1.0,
                 agg_time: float = 0.1, seed: int = 0, full_view: bool = True) -> None:
        self.cfg = cfg
        self.latency = latency
        self.train_time = train_time
        self.agg_time = agg_time
        self.now = 0.0
        self.q: list = []
        self.seq = itertools.count()
        self.cores: dict[bytes, ModestCore] = {}
        self.addr: dict[str, bytes] = {}
        self.down: set[bytes] = set()
        self.events: list[tuple[float, bytes, object]] = []
        self.aggregations: dict[int, list[tuple[bytes, tuple]]] = {}
        self.new_models: dict[bytes, list[tuple[int, bytes]]] = {}
        self.finished: set[bytes] = set()
        self.trainings: dict[bytes, list[int]] = {}
        init = b"\0" * 32
        for i in range(n):
            pk = pk_of(i)
            a = f"mem://{i}"
            self.addr[a] = pk
            self.cores[pk] = ModestCore(cfg, pk, (a,), init, random.Random(seed * 1000 + i))
        self.full_view = full_view
        self.part: dict[bytes, int] = {}   # partition(): messages between different parts are lost
        self.merges: list[tuple[float, bytes, Merge]] = []

    def partition(self, *groups: list[bytes]) -> None:
        """Cut the network into `groups` (messages across are dropped); no groups: heal."""
        self.part = {pk: g for g, pks in enumerate(groups) for pk in pks}

    def _cut(self, a: bytes, b: bytes) -> bool:
        return bool(self.part) and self.part.get(a, -1) != self.part.get(b, -1)

    def start(self, bootstrap: dict[bytes, list[str]] | None = None) -> None:
        addrs = list(self.addr)
        for pk, c in self.cores.items():
            b = bootstrap[pk] if bootstrap else addrs
            self._run(pk, c.start(self.now, b))

    def add_node(self, i: int, bootstrap: list[str]) -> bytes:
        pk = pk_of(i)
        a = f"mem://{i}"
        self.addr[a] = pk
        self.cores[pk] = ModestCore(self.cfg, pk, (a,), b"\0" * 32, random.Random(i))
        self._run(pk, self.cores[pk].start(self.now, bootstrap))
        return pk

    def _push(self, t: float, kind: str, pk: bytes, payload) -> None:
        heapq.heappush(self.q, (t, next(self.seq), kind, pk, payload))

    def _run(self, pk: bytes, actions) -> None:
        for a in actions:
            self.events.append((self.now, pk, a))
            if isinstance(a, Send):
                if not self._cut(pk, a.peer):
                    self._push(self.now + self.latency, "msg", a.peer, (pk, a.msg))
            elif isinstance(a, SendTo):
                if a.address in self.addr and not self._cut(pk, self.addr[a.address]):
                    self._push(self.now + self.latency, "msg", self.addr[a.address], (pk, a.msg))
            elif isinstance(a, StartTraining):
                self.trainings.setdefault(pk, []).append(a.round)
                model = hashlib.sha256(pk + a.model + a.round.to_bytes(8, "big")).digest()
                self._push(self.now + self.train_time, "trained", pk, (a.round, model))
            elif isinstance(a, Aggregate):
                self.aggregations.setdefault(a.round, []).append((pk, a.contributions))
                model = hashlib.sha256(b"".join(m for _, m in a.contributions)).digest()
                self._push(self.now + self.agg_time, "aggregated", pk, (a.round, model))
            elif isinstance(a, Merge):
                self.merges.append((self.now, pk, a))
                model = hashlib.sha256(b"merge" + a.own + b"".join(m for _, m in a.contributions)).digest()
                self._push(self.now + self.agg_time, "merged", pk, (a.round, model))
            elif isinstance(a, NewModel):
                self.new_models.setdefault(pk, []).append((a.round, a.model))
            elif isinstance(a, Finished):
                # As the daemon does: leave gracefully (LEAVE adverts), then stop.
                self.finished.add(pk)
                self._run(pk, self.cores[pk].leave(self.now))
                self.down.add(pk)
            elif isinstance(a, (CancelTraining, Event)):
                pass
        d = self.cores[pk].next_deadline()
        if d is not None:
            self._push(max(d, self.now), "tick", pk, None)

    def run_until(self, t_end: float) -> None:
        while self.q and self.q[0][0] <= t_end:
            t, _, kind, pk, payload = heapq.heappop(self.q)
            self.now = t
            if pk in self.down or pk not in self.cores:
                continue
            c = self.cores[pk]
            if kind == "msg":
                sender, msg = payload
                self._run(pk, c.handle(t, sender, msg))
            elif kind == "tick":
                d = c.next_deadline()
                if d is not None and d <= t + 1e-9:
                    self._run(pk, c.tick(t))
            elif kind == "trained":
                self._run(pk, c.training_done(t, *payload))
            elif kind == "aggregated":
                self._run(pk, c.aggregation_done(t, *payload))
            elif kind == "merged":
                self._run(pk, c.merge_done(t, *payload))
        self.now = t_end

    def crash(self, pk: bytes) -> None:
        self.down.add(pk)

    def max_round(self) -> int:
        return max(c.round for pk, c in self.cores.items() if pk not in self.down)
