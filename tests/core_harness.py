"""A deterministic, zero-I/O harness driving many ModestCore instances on a virtual clock.

Training and aggregation complete after fixed virtual delays; models are fake hashes.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import random

from gossipnode.core.actions import Aggregate, Event, Merge, NewModel
from gossipnode.core.driver import ActionDriver
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
        self.drivers: dict[bytes, ActionDriver] = {}
        self.tick_at: dict[bytes, float] = {}   # each node's one pending wake (as sim/modest.py)

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

    def _driver(self, pk: bytes) -> ActionDriver:
        d = self.drivers.get(pk)
        if d is None:
            d = self.drivers[pk] = ActionDriver(self.cores[pk], _Host(self, pk), lambda: self.now,
                                                observe=lambda a: self.events.append((self.now, pk, a)))
        return d

    def _run(self, pk: bytes, actions) -> None:
        """Carry out a core's actions through the shared ActionDriver (core/driver.py)."""
        self._driver(pk).run(actions)

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
                if self.tick_at.get(pk) != t:
                    continue   # a later wake_at replaced this one
                del self.tick_at[pk]
                self._driver(pk).tick()
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


class _Host:
    """How the harness carries out one node's actions: zero I/O, fixed virtual delays, fake hashes."""

    def __init__(self, net: CoreNet, pk: bytes) -> None:
        self.net, self.pk = net, pk

    def send(self, peer: bytes, msg) -> None:
        net = self.net
        if not net._cut(self.pk, peer):
            net._push(net.now + net.latency, "msg", peer, (self.pk, msg))

    def send_to(self, address: str, msg) -> None:
        net = self.net
        if address in net.addr and not net._cut(self.pk, net.addr[address]):
            net._push(net.now + net.latency, "msg", net.addr[address], (self.pk, msg))

    def start_training(self, round_: int, model: bytes) -> None:
        net = self.net
        net.trainings.setdefault(self.pk, []).append(round_)
        h = hashlib.sha256(self.pk + model + round_.to_bytes(8, "big")).digest()
        net._push(net.now + net.train_time, "trained", self.pk, (round_, h))

    def cancel_training(self, round_: int) -> None:
        pass

    def aggregate(self, a: Aggregate) -> None:
        net = self.net
        net.aggregations.setdefault(a.round, []).append((self.pk, a.contributions))
        h = hashlib.sha256(b"".join(m for _, m in a.contributions)).digest()
        net._push(net.now + net.agg_time, "aggregated", self.pk, (a.round, h))

    def merge(self, a: Merge) -> None:
        net = self.net
        net.merges.append((net.now, self.pk, a))
        h = hashlib.sha256(b"merge" + a.own + b"".join(m for _, m in a.contributions)).digest()
        net._push(net.now + net.agg_time, "merged", self.pk, (a.round, h))

    def new_model(self, a: NewModel) -> None:
        self.net.new_models.setdefault(self.pk, []).append((a.round, a.model))

    def finished(self, reason: str) -> None:
        # As the daemon does: leave gracefully (LEAVE adverts), then stop.
        net = self.net
        net.finished.add(self.pk)
        net._driver(self.pk).leave()
        net.down.add(self.pk)

    def event(self, e: Event) -> None:
        pass

    def wake_at(self, t: float) -> None:
        # one pending wake per node, the earliest (stale ones would each re-schedule: 1.6 M
        # ticks for 33 k messages in test_core_roles)
        net = self.net
        cur = net.tick_at.get(self.pk)
        if cur is not None and cur <= t:
            return
        net.tick_at[self.pk] = t
        net._push(t, "tick", self.pk, None)
