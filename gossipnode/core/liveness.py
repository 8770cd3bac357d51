"""Liveness of the MoDeST core (SPEC 15.1 "Stall restart", 15.5 "Partitions"): re-sending a model
after round_timeout without progress, restarting a round nobody is left to send, and peers out
of reach: skipped by walks, probed with back-off until they answer (a partition heals), and
the lineage merge when they come back with rounds of their own.

A mixin of ModestCore (modest.py); it shares the core's state and uses its `_walk`, `_send`,
`_event` and `_send_aggregated`. Sans-I/O.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field

from .actions import Merge, NewModel, SendTo
from .messages import ModelKind, ModelMsg, Ping, Status


STALL_PROBES = 10
PROBE_BURST = 8        # probes sent per ping_interval at most (a view full of dead peers costs little)
MERGE_BETA_MAX = 0.9   # a lineage merge never simply overwrites the received model


@dataclass
class _Probe:
    """A peer out of reach (a walk's ping timed out, or inactive, or departed): pinged now and then."""
    next_at: float
    backoff: float
    sent: int = 0      # probes sent without an answer
    last_sent: float = 0.0
    inactive: bool = False   # found inactive by the scan (not lost by a walk): see keepalive.py

    def failed(self, now: float, timeout: float) -> bool:
        """At least one probe went unanswered for a ping timeout: a real outage, not a lost ping."""
        return self.sent >= 2 or (self.sent == 1 and now - self.last_sent >= timeout)


@dataclass
class _Retry:
    """Re-send after `round_timeout` without progress (a crashed aggregator or trainers)."""
    at: float
    round: int
    kind: ModelKind
    model: bytes
    count: int
    tries: int = 0
    peers: list[bytes] = field(default_factory=list)   # the peers the model went to
    check_at: float | None = None   # ping them then: one out of reach means re-send now (SPEC 15.5)
    early: bool = False   # an early re-send was granted (it does not count against max_retries)

    def hurry(self, now: float) -> None:
        """Re-send now, once per model send, without spending one of the max_retries."""
        if not self.early:
            self.early = True
            self.at = min(self.at, now)
            self.tries -= 1


class Liveness:
    def _init_liveness(self) -> None:
        self.retries: list[_Retry] = []
        self._stalled_at: int | None = None      # R at the last stall check that found no progress
        self.progress_at = 0.0       # when R last grew (see _stall_tick)
        self._progress_round = 0
        self._stall_walk = False
        self._probe: dict[bytes, _Probe] = {}
        self._scan_at = 0.0          # next look at the view for inactive / departed peers
        self._probe_at = 0.0         # next probe burst
        self._boot_at = 0.0          # next re-contact of bootstrap addresses
        self._apart: dict[bytes, tuple[int, float]] = {}   # out of reach since (our R, time)
        self._returned: dict[bytes, int] = {}   # back after a real outage -> our R when it left (fork)
        self._part: tuple[int, int] | None = None   # (our part, the other) when the first one came back
        self._merging: tuple[int, bytes] | None = None   # (round, received model) while a merge runs
        self._heal_round = 0         # our model's round when the first peer came back
        self._merged_round = -1      # round of our last lineage merge (one merge per heal)
        self._reported_unreachable = 0
        self._check_at: float | None = None   # aggregating: when to ping the trainers still missing

    def _retry_tick(self, now: float) -> None:
        """No sign of progress `round_timeout` after a model send: ping-walk again and re-send
        to those that answer with an older round (a crashed peer is skipped by the walk)."""
        keep: list[_Retry] = []
        for r in self.retries:
            seen = self.round if r.kind == ModelKind.AGGREGATED else self.train_idx
            if seen > r.round or (r.kind == ModelKind.TRAINED and seen >= r.round) or self.finished:
                continue
            if r.check_at is not None and now >= r.check_at:
                r.check_at = None
                self._check_sent(r)
            if now < r.at:
                keep.append(r)
                continue
            if r.tries >= self.cfg.max_retries:
                self._event(r.round, "gave_up", model_kind=r.kind.name.lower())
                continue
            r.tries += 1
            r.at = now + self.cfg.round_timeout
            keep.append(r)

            def resend(peers: list[bytes], r: _Retry = r) -> None:
                # The walk may end at this node itself (every other candidate is gone): then it
                # takes the model, so an aggregator's crash cannot stall the round for good.
                behind = [p for p in peers if self._behind(p, r)]
                if len(behind) < len(peers) and not behind:
                    r.tries = self.cfg.max_retries  # every reachable peer is at or past the round
                    return
                self._event(r.round, "retry", model_kind=r.kind.name.lower(), attempt=r.tries,
                            to=[p.hex()[:16] for p in behind])
                for p in behind:
                    self._send(p, ModelMsg(r.round, r.kind, r.model, self.view.records()))

            # Really ping this time (no freshness shortcut), so crashed peers are skipped.
            self._walk(self.order(r.round), r.count, r.round, resend, fresh=False)
        self.retries = keep

    def _sent(self, r: _Retry, peers: list[bytes]) -> None:
        """The model of retry `r` went to `peers`: a TRAINED one's aggregators are checked on after
        2 x ping_timeout. (Not an AGGREGATED one's trainers: measured, hurrying those re-sends
        stalled the simulator's crash churn, tests/test_sim.py.)"""
        r.peers = [p for p in peers if p != self.pk]
        if r.peers and r.kind == ModelKind.TRAINED:
            r.check_at = self.now + 2 * self.cfg.ping_timeout

    def _check_sent(self, r: _Retry) -> None:
        """No progress 2 x ping_timeout after a model send: ping its receivers. One that does not
        answer (a cut fell between us since it was heard from, or it crashed) makes the re-send
        go now, not after round_timeout; receivers that answer are busy (aggregating, training):
        wait, and ping them again 2 x ping_timeout later, until progress or the re-send."""
        def done(_reachable: list[bytes]) -> None:
            if any(p in self.unreachable for p in r.peers):
                r.hurry(self.now)
            elif not r.early:   # busy: look again later (it may crash while it waits for updates)
                r.check_at = self.now + 2 * self.cfg.ping_timeout

        if any(p in self.unreachable for p in r.peers):
            r.hurry(self.now)
            return
        self._walk(list(r.peers), len(r.peers), r.round, done, fresh=False)

    def _behind(self, pk: bytes, r: _Retry) -> bool:
        if pk != self.pk:
            return self.peer_round.get(pk, -1) < r.round
        mine = self.agg_idx if r.kind == ModelKind.TRAINED else self.train_idx
        return mine < r.round

    def _stall_watch(self) -> bool:
        """Idle with nothing pending: the only state in which no timer would ever fire again."""
        return (self.cfg.stall_timeout is not None and not self.finished and not self._stall_walk
                and not self._bootstrapping()
                and self.training is None and not self.walks and not self.retries
                and (self.completed_aggregation or not self.buffer))

    def _stall_tick(self, now: float) -> None:
        """No new round for `stall_timeout` and idle. If every node that held the round's models
        crashed (or, at start, all of round 1's sample), nobody is left to send one, and nobody
        would ever start a round again. Ping the next round's candidates: if a peer answers from a
        later round, or one that took part in round R (its own retries carry on), do nothing. If
        none did, the first reachable candidate (in the order every node computes) restarts with
        round R + 1, as its aggregator, from its newest model: a lone survivor goes on alone."""
        if not self._stall_watch() or now < self.progress_at + self.cfg.stall_timeout:
            return
        r = self.round
        self._stall_walk = True
        self._event(r, "stalled", idle_s=round(now - self.progress_at, 3))

        def check(reachable: list[bytes]) -> None:
            self._stall_walk = False
            self.progress_at = self.now
            if self.round > r:
                self._stalled_at = None
                return  # a pong told of a later round (or moved R_v: a bootstrap peer, witnesses)
            # Vetoes: a peer that took part in round R (its retries may go on). Not one whose round
            # is above our window (we reject its models, so waiting for it never ends), and, at a
            # second stall at the same R (2 x stall_timeout idle: any retries of R are over), not
            # one that is merely at R too (it may be stalled itself, waiting for us).
            cap, again = self._cap(), self._stalled_at == r
            self._stalled_at = r
            busy = [p for p in reachable if p != self.pk
                    and max(r, 1) <= self._pong_round.get(p, -1) <= cap
                    and not (again and self._pong_round.get(p, -1) <= r)]
            if busy or (reachable and reachable[0] != self.pk) or self.finished:
                return
            self._stalled_at = None
            self._event(r + 1, "restart", model=self.model.hex()[:16])
            self.agg_idx = max(self.agg_idx, r + 1)
            self.completed_aggregation = True
            self.buffer = {}
            self._send_aggregated(r + 1, self.model)

        # Bootstrap peers outside the walk are asked too: their PONG round re-syncs a laggard.
        cands = self.order(r + 1)
        for pk in self._boot_peers:
            if pk not in cands and self.is_member(pk):
                self._send(pk, Ping(self.round, self._new_nonce(), self.own_record()))
        # More than s probes: in a healthy network an idle node's R is stale, and each probed peer
        # that took part since then vetoes; a false restart needs every probe to be stale too.
        self._walk(cands, max(self.cfg.sample_size, STALL_PROBES), r + 1, check, fresh=False)

    # ---- peers out of reach (SPEC 15.5 "Partitions") ------------------------------------------
    def _lost(self, pk: bytes) -> None:
        """A ping to `pk` timed out (or it missed an aggregation): skip it in walks, probe it."""
        if pk == self.pk:
            return
        self.unreachable[pk] = self.now
        self._apart.setdefault(pk, (self.round, self.now))
        if pk not in self._probe:
            b = 2 * self.cfg.ping_timeout
            self._probe[pk] = _Probe(self.now + b, b)

    def peer_failed(self, now: float, peer: bytes) -> list:
        """The runtime could not deliver a message to `peer` (time-out, refused): it is out of reach
        now, and a model just sent there goes elsewhere at once, not after round_timeout."""
        self.now = now
        if peer != self.pk and peer in self.view and peer not in self.unreachable:
            self._lost(peer)
            for r in self.retries:
                if peer in r.peers:
                    r.hurry(now)
        return self._flush()

    def _heard(self, pk: bytes) -> None:
        """A signed message from a member: it is in reach. After a real outage (a probe went
        unanswered) its rounds since then may be a lineage of their own."""
        self.unreachable.pop(pk, None)
        probe = self._probe.pop(pk, None)
        apart = self._apart.pop(pk, None)
        if apart is not None and probe is not None and probe.failed(self.now, self.cfg.ping_timeout):
            if not self._returned:
                # part sizes while apart, for the merge weights: us and those still out of reach
                others = len(self._apart) + 1
                ours = max(1, len([p for p in self.active(self.round)
                                   if p not in self._apart and p != pk]))
                self._part = (ours, others)
                self._heal_round = self.model_round
                self._event(self.round, "partition_healing", peer=pk.hex()[:16], fork=apart[0],
                            apart_s=round(self.now - apart[1], 3), part=ours, other=others)
            self._returned[pk] = apart[0]

    def _reach_tick(self, now: float) -> None:
        if not self.started_once():
            return
        if now >= self._scan_at:
            self._scan_at = now + self.cfg.probe_max / 2
            self._scan_out_of_reach(now)
            self._recontact_bootstrap(now)
        if now < self._probe_at or not self._probe:
            return
        self._probe_at = now + self.cfg.ping_interval
        due = sorted((p.next_at, pk) for pk, p in self._probe.items() if p.next_at <= now)
        for _, pk in due[:PROBE_BURST]:
            p = self._probe[pk]
            if not self._idle_probe_ok(now, p.inactive):
                continue
            p.sent += 1
            p.last_sent = now
            p.backoff = min(2 * p.backoff, self.cfg.probe_max)
            p.next_at = now + p.backoff
            self._send(pk, Ping(self.round, self._new_nonce(), self.own_record()))

    def started_once(self) -> bool:
        return not (self.round == 0 and self.train_idx == 0) and not self.finished

    def _scan_out_of_reach(self, now: float) -> None:
        """Inactive members (silent for more than tau rounds) and departed ones are probed too:
        after a partition longer than tau each part sees the other as inactive."""
        below = self.round - self.cfg.inactivity_threshold
        room = self._inactive_room()
        ents = self.view.entries
        join = Status.JOIN
        out = [pk for pk, e in ents.items() if e.last_active < below and e.status == join] if room > 0 else []
        out += [pk for pk in self.gone if pk in ents]
        for pk in out:
            if room <= 0:
                break
            if pk == self.pk or pk in self._probe:
                continue
            room -= 1
            b = 2 * self.cfg.ping_timeout
            self._probe[pk] = _Probe(now, b, inactive=True)
            self._apart.setdefault(pk, (ents[pk].last_active, now))
        for pk in [pk for pk in self._probe if pk not in self.view.entries]:
            del self._probe[pk]
            self._apart.pop(pk, None)
        # bounded: the view is (max_peers); returned peers are forgotten after tau rounds
        for pk in [pk for pk, f in self._returned.items() if f < self.round - 2 * max(1, self.cfg.window)
                   and pk not in self.view.entries]:
            del self._returned[pk]

    def _recontact_bootstrap(self, now: float) -> None:
        """Bootstrap addresses that no member of the view holds (never reached, or the node there has
        a new key) get our JOIN advert again, every probe_max; known members are probed instead."""
        if now < self._boot_at or not self.bootstrap:
            return
        self._boot_at = now + self.cfg.probe_max
        reach = {a for e in self.view.entries.values() if e.status == Status.JOIN for a in e.addresses}
        adv = None
        for addr in self.bootstrap:
            if addr not in reach:
                adv = adv or self._advert()
                self._out.append(SendTo(addr, adv))

    def _probe_deadline(self) -> float | None:
        if not self.started_once():
            return None
        ds = [self._scan_at]
        idle = self._idle_probe_at if not self.current() else 0.0
        if self._probe:
            ds.append(max(self._probe_at, min(max(p.next_at, idle) if p.inactive else p.next_at
                                               for p in self._probe.values())))
        return min(ds)

    def _missing_tick(self, now: float) -> None:
        """Aggregating, 2 x ping_timeout after the first update, with updates still missing: ping
        the expected trainers that did not send (the first s of order(k-1) not known out of reach).
        Those that do not answer are out of reach (a cut fell between them and us), so the
        aggregation needs fewer updates and does not wait out aggregation_timeout for them."""
        if self._check_at is None or now < self._check_at or self.completed_aggregation or not self.buffer:
            return
        self._check_at = None
        k = self.agg_idx
        expected = [p for p in self.order(k - 1) if p not in self.unreachable][: self.cfg.sample_size]
        missing = [p for p in expected if p != self.pk and p not in self.buffer]
        if not missing or len(self.buffer) >= self._needed(k):
            return

        def done(_reachable: list[bytes]) -> None:
            # expected trainers that did not answer will not send: wait for the others only
            # (a crash or a cut among a large population does not shrink _needed by itself)
            gone = sum(1 for p in missing if p in self.unreachable)
            need = min(self._needed(k), max(1, math.ceil((len(expected) - gone) * self.cfg.success_fraction - 1e-9)))
            if self.agg_idx == k and not self.completed_aggregation and self.buffer and len(self.buffer) >= need:
                self._event(k, "aggregation_early", received=len(self.buffer), out_of_reach=len(self.unreachable))
                self._aggregate()

        self._walk(missing, len(missing), k, done, fresh=False)

    def _report_reach(self) -> None:
        n = len(self.unreachable)
        if n != self._reported_unreachable:
            self._reported_unreachable = n
            self._event(self.round, "peers_unreachable", count=n,
                        peers=[p.hex()[:16] for p in list(self.unreachable)[:8]])

    # ---- lineage merge (SPEC 15.5) ---------------------------------------------------------------
    def would_merge(self, sender: bytes, k: int, model: bytes) -> bool:
        """Would an AGGREGATED(k) `model` from `sender` start a lineage merge (a query, no change)?"""
        return k > self.train_idx and self._mergeable(sender, model)

    def _mergeable(self, sender: bytes, model: bytes) -> bool:
        fork = self._returned.get(sender)
        return fork is not None and fork >= self._merged_round and self._heal_round > fork and self.model != model

    def _merge_instead(self, k: int, model: bytes, sender: bytes) -> bool:
        """An AGGREGATED(k) from a peer that came back from a partition, while our own model holds
        rounds of work done apart: merge our lineage into it (once per heal), then train from the
        merge. Weights: the work each part did since the fork (rounds x updates per round)."""
        # peers that left before our last merge were part of that heal: no second merge for them
        if not self._mergeable(sender, model):
            return False
        fork = self._returned[sender]
        ours, others = self._part or (1, 1)
        s = self.cfg.sample_size
        w_own = (self._heal_round - fork) * min(s, ours)
        w_other = max(1, k - fork) * min(s, others)
        target = w_own / (w_own + w_other)
        # every node of our part merges once, each as one of the round's s trainers
        beta = min(MERGE_BETA_MAX, target * min(s, ours + others) / ours)
        self._returned.clear()
        self._part = None
        self._merged_round = k
        self._merging = (k, model)
        self._event(k, "merge", own=self.model.hex()[:16], own_round=self.model_round,
                    other=model.hex()[:16], other_round=k, sender=sender.hex()[:16], fork=fork,
                    weight_own=round(beta, 4), work_own=w_own, work_other=w_other)
        self._out.append(Merge(k, self.model, ((sender, model),), beta=beta))
        return True

    def merge_done(self, now: float, round_: int, model: bytes) -> list:
        """The runtime merged the lineages (Merge action): train round `round_` from the result."""
        self.now = now
        m, self._merging = self._merging, None
        if m is None or m[0] != round_ or round_ != self.train_idx or self.training is not None \
                or self.completed_training:
            self._event(round_, "merge_stale")
            return self._flush()
        self._adopted(round_, model)
        self._out.append(NewModel(round_, model, "merge"))
        self._train(round_, model, "merge")
        return self._flush()
