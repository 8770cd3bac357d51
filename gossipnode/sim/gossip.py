"""Gossip learning in the simulator: every node runs the daemon's ``GossipPeerCore`` (gossip
learning plus its membership: JOIN/LEAVE adverts, view shares, member-only merges), driven by the
shared ``ActionDriver`` on the engine's clock, with the daemon's SybilWall history gossip."""
from __future__ import annotations

import itertools
import random
from typing import Any

from gossipnode.core.actions import Event, Merge, NewModel
from gossipnode.core.auth import DigestAuth
from gossipnode.core.driver import ActionDriver
from gossipnode.core.gossip import GossipConfig
from gossipnode.core.gossip_peer import GossipPeerCore
from gossipnode.core.messages import ModelKind, ModelMsg, Status, ViewRecord
from gossipnode.core.view import Entry

from .engine import Engine, pk_of
from .exchange import SimExchange
from .modest import BOOTSTRAP_PEERS, msg_kind


class GossipSim(SimExchange, Engine):
    name = "gossip"

    def setup(self) -> None:
        cfg = self.cfg
        self.gcfg = GossipConfig(interval=cfg.gossip_interval)
        n = self.n_honest_cap + self.n_sybils
        self.pks = [pk_of(cfg.seed, i) for i in range(n)]
        self.index_of = {pk: i for i, pk in enumerate(self.pks)}
        self.addr = [f"mem://{i}" for i in range(n)]
        self.addr_index = {a: i for i, a in enumerate(self.addr)}
        self.cores: dict[int, GossipPeerCore] = {}
        self.drivers: dict[int, ActionDriver] = {}
        self.current: dict[int, bytes] = {}
        self.tick_at: dict[int, float] = {}
        self.training: dict[int, tuple[int, int, bytes]] = {}
        self._tokens = itertools.count(1)
        self.attacker_ref = self.initial
        subset = list(range(cfg.nodes))
        self.rng.shuffle(subset)
        self.eval_ids = sorted(subset[: cfg.eval_nodes])
        self.intervals = 0
        self._init_exchange()

    def _core(self, i: int) -> GossipPeerCore:
        c = GossipPeerCore(self.gcfg, self.pks[i], (self.addr[i],), self.initial_of(i),
                           random.Random(self.cfg.seed * 1_000_003 + i), max_peers=10**9)
        self.cores[i] = c
        self.drivers[i] = ActionDriver(c, self._host(i), lambda: self.now)
        self.current[i] = self.initial_of(i)
        return c

    def begin(self) -> None:
        present = list(range(self.cfg.nodes)) + self.sybil_ids
        # Pre-bootstrapped views (what JOIN adverts and view shares converge to), each entry its
        # peer's own record signed with the cheap DigestAuth; Sybils are members too.
        auth = DigestAuth()
        recs = {j: auth.sign(ViewRecord(self.pks[j], 0, 1, Status.JOIN, (self.addr[j],))) for j in present}
        for i in range(self.cfg.nodes):
            c = self._core(i)
            for j in present:
                if j != i:
                    c.view.entries[self.pks[j]] = Entry(0, 1, Status.JOIN, (self.addr[j],), recs[j])
                    c.gossip.add_peer(self.pks[j])
        for i in range(self.cfg.nodes):
            self.drivers[i].start([])
        for s in self.sybil_ids:
            self.after(self.rng.uniform(0, self.cfg.gossip_interval), self._sybil_push, s)
        self.after(self.cfg.gossip_interval, self._interval)

    def _interval(self) -> None:
        self.intervals += 1
        self.maybe_record(self.intervals)
        self.after(self.cfg.gossip_interval, self._interval)

    def join(self, i: int) -> None:
        """A joiner knows a few bootstrap addresses; the rest is the core's membership protocol."""
        self._core(i)
        alive = [j for j in range(self.next_join - 1) if self.alive[j] and j in self.cores]
        boot = self.rng.sample(alive, min(BOOTSTRAP_PEERS, len(alive)))
        self.drivers[i].start([self.addr[j] for j in boot])

    def leave(self, i: int) -> None:
        if i in self.drivers:
            self.drivers[i].leave()
        self.crash(i)

    def crash(self, i: int) -> None:
        self.alive[i] = False
        self.training.pop(i, None)

    # ---- actions: node i's Host for the shared ActionDriver (core/driver.py) ---------------
    def _host(self, i: int):
        sim = self

        def deliver(j: int, msg) -> None:
            sim.send(i, j, sim.sizes.of(msg), msg_kind(msg), sim._on_msg, j, i, msg,
                     on_fail=lambda: sim._failed(i, j))

        class Host:
            def send(self, peer: bytes, msg) -> None:
                deliver(sim.index_of[peer], sim.outgoing(i, peer, msg))   # + SybilWall histories

            def send_to(self, address: str, msg) -> None:
                j = sim.addr_index.get(address)
                if j is not None:
                    deliver(j, msg)

            def start_training(self, round_: int, model: bytes) -> None:
                tok = next(sim._tokens)
                sim.training[i] = (tok, round_, model)
                sim.after(sim.train_time(i), sim._trained, i, tok)

            def cancel_training(self, round_: int) -> None:
                sim.training.pop(i, None)

            def aggregate(self, a) -> None:
                raise AssertionError("gossip learning never aggregates")

            def merge(self, a: Merge) -> None:
                sim.after(sim.cfg.agg_time * len(a.contributions), sim._merge, i, a)

            def new_model(self, a: NewModel) -> None:
                sim.current[i] = a.model

            def finished(self, reason: str) -> None:
                pass

            def event(self, e: Event) -> None:
                if e.kind == "rejected":
                    sim.events["rejected_" + str(e.detail.get("reason"))] += 1

            def wake_at(self, t: float) -> None:
                sim.wake_at(i, t)

        return Host()

    def _on_msg(self, j: int, i: int, msg: object) -> None:
        if j in self._sybil_set:
            if isinstance(msg, ModelMsg):
                self.attacker_ref = msg.model
            return
        if isinstance(msg, ModelMsg) and (msg := self.take_histories(j, i, msg)) is None:
            return   # bad_history: refused, as the daemon does
        self.drivers[j].handle(self.pks[i], msg)

    def _failed(self, i: int, j: int) -> None:
        if self.alive[i]:
            self.drivers[i].peer_failed(self.pks[j])

    def _merge(self, i: int, a: Merge) -> None:
        if not self.alive[i]:
            return
        contribs = [(self.index_of[pk], h) for pk, h in a.contributions]
        # deltas (and SybilWall histories): received model - node i's own model
        h = self.aggregate(i, a.round, contribs, own=a.own, beta=self.cfg.beta)
        self.drivers[i].merge_done(a.round, h)

    def _trained(self, i: int, tok: int) -> None:
        job = self.training.get(i)
        if job is None or job[0] != tok or not self.alive[i]:
            return
        del self.training[i]
        _, k, h = job
        self.drivers[i].training_done(k, self.train(i, h))

    def _sybil_push(self, s: int) -> None:
        targets = [i for i in range(self.next_join) if self.alive[i]]
        if targets:
            j = targets[self.rng.randrange(len(targets))]
            bad = self.poisoned(self.attacker_ref)
            msg = ModelMsg(0, ModelKind.GOSSIP, bad, ())
            self.send(s, j, self.sizes.of(msg), "model_sybil", self._on_msg, j, s, msg)
        self.after(self.cfg.gossip_interval, self._sybil_push, s)

    # ---- measurement ----------------------------------------------------------------------------
    def rounds_done(self) -> int:
        return self.intervals

    def eval_models(self) -> list[bytes]:
        ids = [i for i in self.eval_ids if self.alive[i]] or [i for i in range(self.next_join) if self.alive[i]]
        return [self.current[i] for i in ids]

    def referenced(self) -> set[bytes]:
        keep = set(self.current.values()) | {self.attacker_ref} | set(self._poison_cache.values())
        keep |= {h for _, _, h in self.training.values()}
        for c in self.cores.values():
            keep.add(c.gossip.model)
            keep.update(h for _, h in c.gossip.inbox.values())
        return keep

    def extra_metrics(self) -> dict[str, Any]:
        return {"merges": sum(c.gossip.merges for c in self.cores.values())}
