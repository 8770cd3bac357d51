"""MoDeST in the simulator: the real ``ModestCore`` of every node, driven by the engine's clock."""
from __future__ import annotations

import itertools
import random
from dataclasses import replace
from typing import Any

from gossipnode.core.actions import Aggregate, Event, Merge, NewModel
from gossipnode.core.driver import ActionDriver
from gossipnode.core.config import ModestConfig, stall_timeout_from
from gossipnode.core.auth import DigestAuth
from gossipnode.core.messages import ModelKind, ModelMsg, Status, ViewRecord, message_type
from gossipnode.core.modest import ModestCore
from gossipnode.core.view import Entry

from gossipnode.learn.sanity import WORSE_MODEL

from .engine import Engine, pk_of
from .exchange import SimExchange

BOOTSTRAP_PEERS = 3   # a joiner knows this many bootstrap addresses
COUNTED_EVENTS = frozenset({"aggregation_timeout", "retry", "gave_up", "aggregation_stale", "stalled", "restart",
                            "verify_rank", "quorum_wait", "merge", "partition_healing", "round_from_partition"})


msg_kind = message_type   # the daemon's per-type counts use the same names


class ModestSim(SimExchange, Engine):
    name = "modest"

    def setup(self) -> None:
        cfg = self.cfg
        self.mcfg = ModestConfig(
            sample_size=cfg.sample_size, aggregators=cfg.aggregators,
            success_fraction=cfg.success_fraction, ping_timeout=cfg.ping_timeout,
            inactivity_threshold=cfg.inactivity_threshold, aggregation_timeout=cfg.aggregation_timeout,
            round_timeout=cfg.round_timeout,
            stall_timeout=stall_timeout_from(cfg.stall_timeout, cfg.round_timeout),
            # nobody floods joins here: a joiner may probe the whole network it learns at once
            max_pending=max(256, self.n_honest_cap + self.n_sybils),
            max_peers=max(10_000, self.n_honest_cap + self.n_sybils),
            role_slack=cfg.role_slack, accept_quorum=cfg.accept_quorum, prewalk=cfg.prewalk, keepalive=cfg.keepalive,
        )
        n = self.n_honest_cap + self.n_sybils
        self.pks = [self.make_pk(i) for i in range(n)]
        self.index_of = {pk: i for i, pk in enumerate(self.pks)}
        self.addr = [f"mem://{i}" for i in range(n)]
        self.addr_index = {a: i for i, a in enumerate(self.addr)}
        self.cores: dict[int, ModestCore] = {}
        self.drivers: dict[int, ActionDriver] = {}
        self.tick_at: dict[int, float] = {}
        self._tokens = itertools.count(1)
        self.training: dict[int, tuple[int, int, bytes]] = {}
        self.current: dict[int, bytes] = {}
        self.latest_round = 0
        self.latest_models: list[bytes] = []
        self.view_active: int | None = None
        self.agg_log: list[dict[str, Any]] = []    # round, aggregator, contributors (cross-check tests)
        self.train_log: list[tuple[int, int]] = []  # (round, node)
        self.keep_logs = bool(cfg.extra.get("keep_logs", False))
        self._init_exchange()

    def make_pk(self, i: int) -> bytes:
        return pk_of(self.cfg.seed, i)

    # ---- node life cycle -----------------------------------------------------------------------
    def _core(self, i: int) -> ModestCore:
        rng = random.Random(self.cfg.seed * 1_000_003 + i)
        c = ModestCore(self.mcfg, self.pks[i], (self.addr[i],), self.initial_of(i), rng, index=1)
        self.cores[i] = c
        self.drivers[i] = ActionDriver(c, self._on_action(i), lambda: self.now)
        self.current[i] = self.initial_of(i)
        self.stores.pop(i, None)   # a (re)joining node starts with an empty store
        self.adopt_held(i, None, self.current[i])
        return c

    def begin(self) -> None:
        present = list(range(self.cfg.nodes)) + self.sybil_ids
        # Pre-bootstrapped: everyone starts knowing everyone present (what the JOIN/ViewShare exchange
        # converges to), so 1,000 nodes do not spend O(N^2) messages and bytes on bootstrapping.
        # Each entry holds its peer's record, signed as that peer's core would (the cheap DigestAuth).
        auth = DigestAuth()
        recs = {j: auth.sign(ViewRecord(self.pks[j], 0, 1, Status.JOIN, (self.addr[j],))) for j in present}
        shared = {self.pks[j]: Entry(0, 1, Status.JOIN, (self.addr[j],), recs[j]) for j in present}
        for i in present:
            c = self._core(i)
            c.view.entries = shared
        for i in present:
            self.drivers[i].start([])
        self.latest_models = [self.initial]

    def crash(self, i: int) -> None:
        self.alive[i] = False
        self.training.pop(i, None)

    def leave(self, i: int) -> None:
        if i in self.cores:
            self.drivers[i].leave()
        self.crash(i)

    def join(self, i: int) -> None:
        self._core(i)
        alive = [j for j in range(self.next_join - 1) if self.alive[j]]
        boot = self.rng.sample(alive, min(BOOTSTRAP_PEERS, len(alive)))
        self.drivers[i].start([self.addr[j] for j in boot])

    # ---- actions: node i's Host for the shared ActionDriver (core/driver.py) ---------------
    def _on_action(self, i: int):
        sim = self

        class Host:
            def send(self, peer: bytes, msg) -> None:
                j = sim.index_of[peer]
                msg = sim.outgoing(i, peer, msg)   # + piggy-backed SybilWall histories
                sim.send(i, j, sim.msg_size(msg), msg_kind(msg), sim._on_msg, j, i, msg)

            def send_to(self, address: str, msg) -> None:
                j = sim.addr_index.get(address)
                if j is not None:
                    sim.send(i, j, sim.msg_size(msg), msg_kind(msg), sim._on_msg, j, i, msg)

            def start_training(self, round_: int, model: bytes) -> None:
                tok = next(sim._tokens)
                sim.training[i] = (tok, round_, model)
                if sim.keep_logs:
                    sim.train_log.append((round_, i))
                sim.after(sim.train_time(i), sim._trained, i, tok)

            def cancel_training(self, round_: int) -> None:
                sim.training.pop(i, None)

            def aggregate(self, a: Aggregate) -> None:
                sim.after(sim.cfg.agg_time * len(a.contributions), sim._aggregated, i, a.round, a.contributions)

            def merge(self, a: Merge) -> None:   # a lineage merge after a partition heal (SPEC 15.5)
                sim.after(sim.cfg.agg_time * 2, sim._merged, i, a)

            def new_model(self, a: NewModel) -> None:
                sim.adopt_held(i, sim.current.get(i), a.model)
                sim.current[i] = a.model
                if a.role == "aggregator" and i not in sim._sybil_set:
                    sim._round_model(i, a.round, a.model)

            def finished(self, reason: str) -> None:
                pass

            def event(self, a: Event) -> None:
                if a.kind in COUNTED_EVENTS:
                    sim.events[a.kind] += 1
                elif a.kind == "rejected":
                    sim.events["rejected_" + a.detail["reason"]] += 1

            def wake_at(self, t: float) -> None:
                sim.wake_at(i, t)

        return Host()

    def _on_msg(self, j: int, i: int, msg: object) -> None:
        if isinstance(msg, ModelMsg):
            self.incoming(j, i, msg, self._accept)   # base fetch first when j lacks the base
        else:
            self.drivers[j].handle(self.pks[i], msg)

    def _accept(self, j: int, i: int, msg: ModelMsg) -> None:
        """As the daemon's receive path after the bytes checked out: adoption check (round
        models), histories, the model held, then the core."""
        if (msg.kind == ModelKind.AGGREGATED and msg.kind == ModelKind.AGGREGATED and j not in self._sybil_set
                and (why := self.adoption_problem(j, msg.model, self.current[j])) is not None):
            self.models_rejected[why] += 1   # as the daemon: counted, the model never used
            if why == WORSE_MODEL and self.cfg.accept_quorum == 1 and msg.round <= self.cores[j].round + 1:
                msg = replace(msg, model=self.current[j])   # the round goes on from j's own model
            else:
                return
        if (taken := self.take_histories(j, i, msg)) is None:
            return
        self.hold(j, taken.model)
        self.drivers[j].handle(self.pks[i], taken)

    def _trained(self, i: int, tok: int) -> None:
        job = self.training.get(i)
        if job is None or job[0] != tok or not self.alive[i]:
            return
        del self.training[i]
        _, k, h = job
        h2 = self.train(i, h)
        if self.compressing and i not in self._sybil_set:
            # the TRAINED delta travels compressed; every node (the trainer too) holds the reconstruction
            h2 = self.compress(i, h2, h)
        self.hold(i, h2)
        self.drivers[i].training_done(k, h2)

    def _aggregated(self, i: int, k: int, contributions: tuple[tuple[bytes, bytes], ...]) -> None:
        if not self.alive[i]:
            return
        c = self.cores[i]
        self.view_active = len(c.active(k))
        contribs = [(self.index_of[pk], h) for pk, h in contributions]
        if self.keep_logs:
            self.agg_log.append({"round": k, "aggregator": i, "contributors": sorted(j for j, _ in contribs)})
        h = self.aggregate(i, k, contribs)
        if i in self._sybil_set and self.cfg.sybil_aggregate == "replace":
            # A legitimately sampled malicious aggregator: it sends the attacker's model (trained
            # from the round's aggregate), the same for every Sybil, instead of the aggregate.
            h = self.poisoned(h)
        elif i in self._sybil_set and self.cfg.sybil_aggregate == "drop":
            h = self.current[i]   # the round's updates are ignored: no progress this round
        self.hold(i, h)
        self.drivers[i].aggregation_done(k, h)

    def _merged(self, i: int, a: Merge) -> None:
        if not self.alive[i]:
            return
        contribs = [(self.index_of[pk], h) for pk, h in a.contributions]
        h = self.aggregate(i, a.round, contribs, own=a.own, beta=a.beta)
        if i < self.n_honest_cap and self.cfg.adopt_margin > 0 and self.adoption_problem(i, h, a.own):
            h = a.own   # the daemon's rule (SPEC 15.5): a merge that leaves us worse is not taken
            self.models_rejected[WORSE_MODEL] += 1
        self.hold(i, h)
        self.drivers[i].merge_done(a.round, h)

    def _round_model(self, i: int, k: int, h: bytes) -> None:
        if k > self.latest_round:
            self.latest_round = k
            self.latest_models = [h]
            self.maybe_record(self.rounds_done())
        elif k == self.latest_round:
            self.latest_models.append(h)

    # ---- measurement ----------------------------------------------------------------------------
    def part_rounds(self) -> list[int]:
        parts: dict[int, int] = {}
        for i, g in self.part_of.items():
            if self.alive[i] and i in self.cores:
                parts[g] = max(parts.get(g, 0), self.cores[i].round)
        return [parts[g] for g in sorted(parts)]

    def rounds_done(self) -> int:
        """Completed train-and-aggregate rounds: the first aggregated model is that of round 2."""
        return max(0, self.latest_round - 1)

    def eval_models(self) -> list[bytes]:
        return list(self.latest_models)

    def extra_metrics(self) -> dict[str, Any]:
        return {"view_active": self.view_active}

    def referenced(self) -> set[bytes]:
        keep = set(self.current.values()) | set(self.latest_models)
        keep |= {h for _, _, h in self.training.values()}
        for c in self.cores.values():
            keep.update(c.buffer.values())
            keep.update(r.model for r in c.retries)
            keep.add(c.model)
            if c._merging is not None:
                keep.add(c._merging[1])
        for (_, base), waiting in self._waiting.items():
            keep.add(base)
            keep.update(m.model for _, m, _ in waiting)
        return keep
