"""Gossip learning in the simulator: the real ``GossipCore`` of every node on the engine's clock."""
from __future__ import annotations

import itertools
import random
from typing import Any

from gossipnode.core.actions import (
    CancelTraining,
    Event,
    Finished,
    Merge,
    NewModel,
    Send,
    StartTraining,
)
from gossipnode.core.gossip import GossipConfig, GossipCore
from gossipnode.core.messages import ModelKind, ModelMsg

from .engine import Engine, pk_of
from .modest import msg_kind


class GossipSim(Engine):
    name = "gossip"

    def setup(self) -> None:
        cfg = self.cfg
        self.gcfg = GossipConfig(interval=cfg.gossip_interval)
        n = self.n_honest_cap + self.n_sybils
        self.pks = [pk_of(cfg.seed, i) for i in range(n)]
        self.index_of = {pk: i for i, pk in enumerate(self.pks)}
        self.cores: dict[int, GossipCore] = {}
        self.current: dict[int, bytes] = {}
        self.tick_at: dict[int, float] = {}
        self.training: dict[int, tuple[int, int, bytes]] = {}
        self._tokens = itertools.count(1)
        self.attacker_ref = self.initial
        subset = list(range(cfg.nodes))
        self.rng.shuffle(subset)
        self.eval_ids = sorted(subset[: cfg.eval_nodes])
        self.intervals = 0

    def _core(self, i: int, peers: list[int]) -> GossipCore:
        c = GossipCore(self.gcfg, self.pks[i], [self.pks[j] for j in peers], self.initial_of(i),
                       random.Random(self.cfg.seed * 1_000_003 + i))
        self.cores[i] = c
        self.current[i] = self.initial_of(i)
        return c

    def begin(self) -> None:
        present = list(range(self.cfg.nodes)) + self.sybil_ids
        for i in range(self.cfg.nodes):
            self._run(i, self._core(i, present).start(self.now))
        for s in self.sybil_ids:
            self.after(self.rng.uniform(0, self.cfg.gossip_interval), self._sybil_push, s)
        self.after(self.cfg.gossip_interval, self._interval)

    def _interval(self) -> None:
        self.intervals += 1
        self.maybe_record(self.intervals)
        self.after(self.cfg.gossip_interval, self._interval)

    def join(self, i: int) -> None:
        peers = [j for j in range(self.next_join) if self.alive[j] and j != i]
        self._run(i, self._core(i, peers).start(self.now))
        for j in peers:
            if j in self.cores:
                self.cores[j].add_peer(self.pks[i])

    def leave(self, i: int) -> None:
        self._run(i, self.cores[i].leave(self.now))
        self.alive[i] = False

    # ---- actions --------------------------------------------------------------------------------
    def _run(self, i: int, actions: list) -> None:
        c = self.cores[i]
        for a in actions:
            if isinstance(a, Send):
                j = self.index_of[a.peer]
                size = self.sizes.of(a.msg)
                self.send(i, j, size, msg_kind(a.msg), self._on_msg, j, i, a.msg,
                          on_fail=lambda i=i, j=j: self._failed(i, j))
            elif isinstance(a, Merge):
                self.after(self.cfg.agg_time * len(a.contributions), self._merge, i, a)
            elif isinstance(a, StartTraining):
                tok = next(self._tokens)
                self.training[i] = (tok, a.round, a.model)
                self.after(self.train_time(i), self._trained, i, tok)
            elif isinstance(a, CancelTraining):
                self.training.pop(i, None)
            elif isinstance(a, NewModel):
                self.current[i] = a.model
            elif isinstance(a, Event | Finished):
                pass
        d = c.next_deadline()
        if d is not None and self.tick_at.get(i) != d:
            self.tick_at[i] = d
            self.at(d, self._tick, i, d)

    def _tick(self, i: int, d: float) -> None:
        if self.tick_at.get(i) != d or not self.alive[i]:
            return
        del self.tick_at[i]
        self._run(i, self.cores[i].tick(self.now))

    def _on_msg(self, j: int, i: int, msg: object) -> None:
        if j in self._sybil_set:
            if isinstance(msg, ModelMsg):
                self.attacker_ref = msg.model
            return
        self._run(j, self.cores[j].handle(self.now, self.pks[i], msg))

    def _failed(self, i: int, j: int) -> None:
        self._run(i, self.cores[i].peer_failed(self.now, self.pks[j]))

    def _merge(self, i: int, a: Merge) -> None:
        if not self.alive[i]:
            return
        contribs = [(self.index_of[pk], h) for pk, h in a.contributions]
        # deltas (and SybilWall histories): received model - node i's own model
        h = self.aggregate(i, a.round, contribs, own=a.own, beta=self.cfg.beta)
        self._run(i, self.cores[i].merge_done(self.now, a.round, h))

    def _trained(self, i: int, tok: int) -> None:
        job = self.training.get(i)
        if job is None or job[0] != tok or not self.alive[i]:
            return
        del self.training[i]
        _, k, h = job
        self._run(i, self.cores[i].training_done(self.now, k, self.train(i, h)))

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
            keep.add(c.model)
            keep.update(h for _, h in c.inbox.values())
        return keep

    def extra_metrics(self) -> dict[str, Any]:
        return {"merges": sum(c.merges for c in self.cores.values())}
