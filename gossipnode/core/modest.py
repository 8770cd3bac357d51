"""MoDeST decentralized sampling as a sans-I/O state machine (ALGORITHMS.md section 1).

Feed it events (`start`, `handle`, `training_done`, `aggregation_done`, `tick`) with the
current time; it returns a list of actions for the runtime. It never reads a clock, never
does I/O and never touches model tensors: models are content hashes here.

This module is the round state machine (trainer and aggregator sides, dispatch, walks, the
finish). The rest of the core is mixed in, one job per module, all sharing this state:
membership.py (signed records, adverts, joins, bootstrap), rounds.py (the bounded round
estimate and its witnesses), roles.py (role checks, held models, the adoption quorum) and
liveness.py (retries and the stall restart), keepalive.py (keep-alive pings),
walks.py (ping-walks, and pre-walks ahead of the next send).
"""
from __future__ import annotations

import math
import random

from .actions import (
    Action, Aggregate, CancelTraining, Event, NewModel, Send, StartTraining,
)
from .auth import DigestAuth, RecordAuth
from .config import ModestConfig
from .keepalive import KeepAlive
from .liveness import Liveness, _Retry
from .membership import Membership
from .messages import Advertise, ModelKind, ModelMsg, Ping, Pong, ViewShare
from .pingwalk import PingWalk
from .walks import Walks
from .roles import VERIFY_WALKS, Roles
from .rounds import Rounds
from .view import View


class ModestCore(Membership, Rounds, Roles, Liveness, KeepAlive, Walks):
    def __init__(
        self,
        cfg: ModestConfig,
        self_pk: bytes,
        addresses: tuple[str, ...],
        initial_model: bytes,
        rng: random.Random,
        index: int = 1,
        auth: RecordAuth | None = None,
        secret_rng: random.Random | None = None,
        pow_nonce: int = 0,
    ) -> None:
        self.pow_nonce = pow_nonce   # this key's join proof-of-work (cfg.join_pow bits; auth.solve_pow)
        self.cfg = cfg
        self.auth: RecordAuth = auth if auth is not None else DigestAuth()
        self._secret = secret_rng or rng   # probe nonces (the daemon passes an unseeded one)
        self.pk = self_pk
        self.addresses = addresses
        self.initial_model = initial_model
        self.rng = rng
        self.view = View()
        self.index = index   # membership index: bumped at every (re)join or leave
        self._init_membership()
        self._init_rounds()
        self._init_roles()
        self._init_liveness()
        self._init_walks()
        self._init_keepalive()
        self.train_idx = 0
        self.agg_idx = 0
        self.training: int | None = None
        self.completed_training = False
        self.completed_aggregation = False
        self.buffer: dict[bytes, bytes] = {}
        self.agg_deadline: float | None = None
        self.walks: list[PingWalk] = []
        self.last_heard: dict[bytes, float] = {}
        self.model_round = 0
        self.model = initial_model   # the newest model this node adopted (a stall restart sends it)
        self.started = False
        self.start_time = 0.0
        self.bootstrap: list[str] = []
        self.bootstrap_next = 0.0
        self.finished = False
        self.finish_sent = False
        self.finish_at: float | None = None   # max_rounds: leave at this time if still idle
        self._out: list[Action] = []
        self._local: list[tuple[bytes, object]] = []
        self.now = 0.0

    def role(self) -> str:
        if self.training is not None:
            return "training"
        if self.agg_idx and not self.completed_aggregation and self.buffer:
            return "aggregating"
        return "idle"

    # ---- events ----------------------------------------------------------------------------
    def start(self, now: float, bootstrap: list[str]) -> list[Action]:
        self.now = now
        self.started = True
        self.start_time = now
        self.progress_at = now
        self.own_record()
        self.bootstrap = [a for a in bootstrap if a not in self.addresses]
        self._advertise_bootstrap(now)
        return self._flush()

    def handle(self, now: float, sender: bytes, msg: object) -> list[Action]:
        self.now = now
        if sender == self.pk:
            self._dispatch(sender, msg)
        else:
            if sender in self.view or sender in self.pending:   # strangers cost no memory here
                self.last_heard[sender] = now
                self._heard(sender)
            if sender in self.gone:
                self._revive(sender)
            self._dispatch(sender, msg)
        return self._flush()

    def training_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        self.now = now
        if self.training != round_ or round_ != self.train_idx:
            self._event(round_, "training_stale")
            return self._flush()
        self.training = None
        self.completed_training = True
        self.progress_at = now
        self._prewalk_trained()
        self._event(round_, "trained", model=model.hex()[:16])
        nxt = round_ + 1
        retry = _Retry(now + self.cfg.round_timeout, nxt, ModelKind.TRAINED, model, self.cfg.aggregators)

        def send(aggs: list[bytes]) -> None:
            self._event(nxt, "send_trained", to=[a.hex()[:16] for a in aggs])
            for a in aggs:
                self._send(a, ModelMsg(nxt, ModelKind.TRAINED, model, self.view.records()))
            self._sent(retry, aggs)
            self._apply_pending()

        self._walk(self.order(nxt), self.cfg.aggregators, nxt, send)
        self.retries.append(retry)
        return self._flush()

    def training_failed(self, now: float, round_: int, reason: str) -> list[Action]:
        self.now = now
        if self.training == round_:
            self.training = None
        self._event(round_, "training_failed", reason=reason)
        return self._flush()

    def aggregation_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        self.now = now
        if self.agg_idx > round_:
            self._event(round_, "aggregation_stale")
            return self._flush()
        self._out.append(NewModel(round_, model, "aggregator"))
        self._adopted(round_, model)
        self.progress_at = now
        self._send_aggregated(round_, model)
        return self._flush()

    def _send_aggregated(self, round_: int, model: bytes) -> None:
        retry = _Retry(self.now + self.cfg.round_timeout, round_, ModelKind.AGGREGATED, model, self.cfg.sample_size)

        def send(trainers: list[bytes]) -> None:
            if self.agg_idx > round_:
                self._event(round_, "aggregation_stale")
                return
            self._event(round_, "send_aggregated", to=[t.hex()[:16] for t in trainers])
            for t in trainers:
                self._send(t, ModelMsg(round_, ModelKind.AGGREGATED, model, self.view.records()))
            self._sent(retry, trainers)
            self._apply_pending()
            self._maybe_finish(round_)

        self._walk(self.order(round_), self.cfg.sample_size, round_, send)
        self.retries.append(retry)

    def _adopted(self, round_: int, model: bytes) -> None:
        if round_ >= self.model_round:
            self.model = model
        self.model_round = max(self.model_round, round_)

    def tick(self, now: float) -> list[Action]:
        self.now = now
        for w in list(self.walks):
            w.tick(now)
        self.walks = [w for w in self.walks if not w.done]
        self._probe_tick(now)
        self._reach_tick(now)
        self._keepalive_tick(now)
        self._prewalk_tick(now)
        if self._bootstrapping():
            self._bootstrap_tick(now)
        self._missing_tick(now)
        if (self.agg_deadline is not None and now >= self.agg_deadline
                and not self.completed_aggregation and self.buffer):
            self._event(self.agg_idx, "aggregation_timeout", received=len(self.buffer))
            self._aggregate()
        self._retry_tick(now)
        self._stall_tick(now)
        self._finish_tick(now)
        return self._flush()

    def next_deadline(self) -> float | None:
        ds = [d for d in (w.next_deadline() for w in self.walks) if d is not None]
        if self.agg_deadline is not None and not self.completed_aggregation and self.buffer:
            ds.append(self.agg_deadline)
            if self._check_at is not None:
                ds.append(self._check_at)
        ds.extend(r.at for r in self.retries)
        ds.extend(r.check_at for r in self.retries if r.check_at is not None)
        if self.pending:
            iv = self._probe_interval()
            ds.extend(min(j.first_sent + self.cfg.ping_timeout, j.last_sent + iv)
                      for j in self.pending.values() if not j.reached)
        if self._bootstrapping():
            ds.append(self.bootstrap_next)
        if self.cfg.max_rounds is not None and not self.finish_sent and self._passed(self.cfg.max_rounds):
            ds.append(self.finish_at if self.finish_at is not None else self.now)
        if self._stall_watch():
            ds.append(self.progress_at + self.cfg.stall_timeout)
        for d in (self._probe_deadline(), self._prewalk_deadline(), self._keepalive_deadline()):
            if d is not None:
                ds.append(d)
        return min(ds) if ds else None

    # ---- message dispatch ------------------------------------------------------------------
    def _dispatch(self, sender: bytes, msg: object) -> None:
        if isinstance(msg, Ping):
            if not self._ping_record(sender, msg.record):
                return
            # The ping's round is hearsay: it moves R at most to R_v + window. (Not rejected:
            # an idle node whose R_v lags must still answer, or it drops out of every sample.)
            self._bump(sender, max(self.round, min(msg.round, self._cap())))
            # Half the window, not the window: a kept-alive idle node (keepalive.py) catches up
            # then, off the critical path, and not when a model of a round out of its range arrives.
            if msg.round >= self.rv() + max(1, self.cfg.window // 2):
                self._witness(sender, msg.round)
            # A PONG carries the highest round this node took part in (holds its model or
            # aggregates it), not R, which may be hearsay from views: retries need to know
            # whether the peer really has the round (see _retry_tick). And our signed record.
            self._send(sender, Pong(max(self.train_idx, self.agg_idx), msg.nonce, self.own_record()))
            self._prewalk_on_ping(sender, msg.round)
        elif isinstance(msg, Pong):
            rec = msg.record
            if rec is not None and rec.peer != sender:
                self._reject(self.round, "bad_record_sig", peer=rec.peer.hex()[:16], why="not the sender's")
                return
            if rec is not None:
                self._take_records((rec,))
            j = self.pending.get(sender)
            if j is not None and not j.reached and msg.nonce == j.nonce:
                self._reached(sender, j)
            if sender not in self.view:
                return
            if msg.round > self.rv():
                self._pong_round[sender] = msg.round
                self._catch_up(sender, msg.round)
            else:
                self._pong_round[sender] = max(msg.round, self._pong_round.get(sender, 0))
            rnd = min(msg.round, self._cap())
            self.peer_round[sender] = rnd
            self._bump(sender, max(self.round, rnd))
            for w in self.walks:
                w.on_pong(self.now, sender, msg.nonce)
            self.walks = [w for w in self.walks if not w.done]
        elif isinstance(msg, ModelMsg):
            self._on_model(sender, msg, VERIFY_WALKS)
        elif isinstance(msg, Advertise):
            self._on_advertise(sender, msg)
        elif isinstance(msg, ViewShare):
            self._on_viewshare(sender, msg)

    def _on_model(self, sender: bytes, msg: ModelMsg, walks: int) -> None:
        # Role checks first: a rejected (or held) model changes nothing, not even the view.
        # (An accepted model raises R_v through train_idx / agg_idx; one held for a quorum does not.)
        if sender != self.pk and not self._role_ok(sender, msg, walks):
            return
        self._take_records(msg.view)
        self._bump(sender, msg.round)
        if msg.kind == ModelKind.AGGREGATED:
            self._on_aggregated(msg.round, msg.model, sender)
        elif msg.kind == ModelKind.TRAINED:
            self._on_trained(msg.round, msg.model, sender)
        else:
            self._event(msg.round, "ignored_model_kind", model_kind=int(msg.kind))

    # ---- trainer and aggregator -------------------------------------------------------------
    def _on_aggregated(self, k: int, model: bytes, sender: bytes) -> None:
        """Trainer side: an aggregated model for round k arrived (or round 1 starts)."""
        if k > self.train_idx and sender != self.pk and not self._quorum(k, model, sender):
            return
        if k > self.train_idx:
            self.train_idx = k
            if self.training is not None:
                self._out.append(CancelTraining(self.training))
                self.training = None
            self.completed_training = False
            self._merging = None
            if sender != self.pk and self._merge_instead(k, model, sender):
                return   # training starts from the merge (merge_done)
            if k > self.model_round:
                self._adopted(k, model)
                self._out.append(NewModel(k, model, "trainer"))
        if (k == self.train_idx and self.training is None and not self.completed_training
                and self._merging is None):
            self._train(k, model, sender.hex()[:16])

    def _train(self, k: int, model: bytes, source: str) -> None:
        if self.cfg.max_rounds is not None and k > self.cfg.max_rounds:
            self._maybe_finish(k)
            return
        self.training = k
        self._event(k, "training", sender=source)
        self._out.append(StartTraining(k, model))
        self._prewalk_schedule(k)

    def _on_trained(self, k: int, model: bytes, sender: bytes) -> None:
        """Aggregator side: a trained model for round k arrived from `sender`."""
        if k > self.agg_idx:
            self.agg_idx = k
            self.buffer = {sender: model}
            self.completed_aggregation = False
            self.agg_deadline = self.now + self.cfg.aggregation_timeout
            self._check_at = self.now + 2 * self.cfg.ping_timeout
            self._event(k, "aggregating", first=sender.hex()[:16])
        elif k == self.agg_idx and not self.completed_aggregation:
            if sender in self.buffer:
                return  # duplicate (a retry or a QoS-1 redelivery)
            self.buffer[sender] = model
        else:
            self._event(k, "stale_update_dropped", sender=sender.hex()[:16], agg_idx=self.agg_idx)
            return
        if len(self.buffer) >= self._needed(k):
            self._aggregate()
        elif len(self.buffer) == 1:
            self._prewalk_trainers(k)

    def _needed(self, k: int) -> int:
        # Peers known out of reach are not waited for (they would cost an aggregation timeout
        # every round of a partition).
        s_eff = min(self.cfg.sample_size, len([p for p in self.active(k) if p not in self.unreachable]))
        return max(1, math.ceil(s_eff * self.cfg.success_fraction - 1e-9))

    def _aggregate(self) -> None:
        self.completed_aggregation = True
        self.agg_deadline = None
        self._check_at = None
        contributions = tuple(sorted(self.buffer.items()))
        self._event(self.agg_idx, "aggregate", contributors=len(contributions))
        self._out.append(Aggregate(self.agg_idx, contributions))

    # ---- helpers ---------------------------------------------------------------------------
    def _send(self, pk: bytes, msg: object) -> None:
        if pk == self.pk:
            self._local.append((pk, msg))
        else:
            self._out.append(Send(pk, msg))  # type: ignore[arg-type]

    def _event(self, round_: int, kind: str, **detail) -> None:
        self._out.append(Event(round_, kind, detail))

    def _reject(self, round_: int, reason: str, **detail) -> None:
        """A rejected message or record: counted by the runtime under `reason`, changes no state."""
        self._out.append(Event(round_, "rejected", {"reason": reason, **detail}))

    def _flush(self) -> list[Action]:
        # Messages to self are handled at once, in order, as if they had arrived.
        while self._local:
            sender, msg = self._local.pop(0)
            self._dispatch(sender, msg)
        if self.round > self._progress_round:
            self._progress_round = self.round
            self.progress_at = self.now
        if self.started or self._own is not None:
            self.own_record()   # keep the relayed self record current (a cheap check)
        self._report_reach()
        out, self._out = self._out, []
        return out
