"""MoDeST decentralized sampling as a sans-I/O state machine (ALGORITHMS.md section 1).

Feed it events (`start`, `handle`, `training_done`, `aggregation_done`, `tick`) with the
current time; it returns a list of actions for the runtime. It never reads a clock, never
does I/O and never touches model tensors: models are content hashes here.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from collections.abc import Iterable

from .actions import (
    Action, Aggregate, CancelTraining, Event, Finished, NewModel, Send, SendTo, StartTraining,
)
from .auth import DigestAuth, RecordAuth, pow_bits
from .config import ModestConfig
from .messages import (
    Advertise, ModelKind, ModelMsg, Ping, Pong, Status, ViewRecord, ViewShare,
)
from .pingwalk import PingWalk
from .sampling import sample, sample_order
from .view import Entry, View


STALL_PROBES = 10
VERIFY_WALKS = 2      # a held model may trigger this many verification walks (SPEC 15.1)
HOLD_MAX = 16         # models held at once while their sender's (or our) rank is verified
QUORUM_ROUNDS = 4     # accept_quorum: rounds whose votes are kept (the newest above train_idx)
FINISH_WITNESSES = 2   # signed claims of distinct peers that the network passed max_rounds
_MEMO = 4096           # bound of the small per-key memories (rate limit, unreachable joiners)


@dataclass
class _Join:
    """A joiner being probed: it enters the view only once it answered a ping at its signed address."""
    record: ViewRecord
    via_advert: bool     # its own JOIN advert (then: applied after our next model send, sent our view)
    nonce: int           # unpredictable, so only a node reached at that address can answer
    first_sent: float
    last_sent: float
    reached: bool = False


@dataclass
class _Retry:
    """Re-send after `round_timeout` without progress (a crashed aggregator or trainers)."""
    at: float
    round: int
    kind: ModelKind
    model: bytes
    count: int
    tries: int = 0


class ModestCore:
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
        self.pending: dict[bytes, _Join] = {}
        self.index = index   # membership index: bumped at every (re)join or leave
        self.status = Status.JOIN
        self._own: ViewRecord | None = None      # this node's signed record, re-signed on change
        self._advert_at: dict[bytes, float] = {}   # JOIN adverts of non-members: one per ping_interval
        self._unreachable: dict[bytes, tuple[int, int]] = {}   # probed in vain: record (index, last_active)
        self._boot_claim: dict[bytes, int] = {}  # VIEW rounds of senders that name a bootstrap address
        self._boot_peers: set[bytes] = set()     # reached at a bootstrap address
        self._reply_to: dict[bytes, tuple[str, ...]] = {}   # signed addresses of pinging strangers
        self.train_idx = 0
        self.agg_idx = 0
        self.training: int | None = None
        self.completed_training = False
        self.completed_aggregation = False
        self.buffer: dict[bytes, bytes] = {}
        self.agg_deadline: float | None = None
        self.walks: list[PingWalk] = []
        self.retries: list[_Retry] = []
        self.last_heard: dict[bytes, float] = {}
        self.gone: dict[bytes, int] = {}   # peers marked LEAVE by `departed` -> their index then
        self.peer_round: dict[bytes, int] = {}   # the round each peer last reported in a pong (capped)
        self._pong_round: dict[bytes, int] = {}  # the same, uncapped (members only): witnesses, stall vetoes
        self._stalled_at: int | None = None      # R at the last stall check that found no progress
        self.verified_round = 0      # R_v: rounds seen from role-checked models (see note_verified)
        # Role checks (SPEC 15.1): peers whose ping timed out in a walk and that were not heard
        # from since (they do not count as "ahead" of a sender), models held while a walk
        # verifies a rank, and accept_quorum votes: round -> model -> aggregators that sent it.
        self.unreachable: dict[bytes, float] = {}
        self._held: dict[tuple[bytes, int, int], ModelMsg] = {}
        self._held_round: dict[tuple[bytes, int, int], ModelMsg] = {}   # held while witnesses answer
        self._witness_walk: int | None = None    # the round a running witness walk checks
        self.votes: dict[int, dict[bytes, set[bytes]]] = {}
        self.model_round = 0
        self.model = initial_model   # the newest model this node adopted (a stall restart sends it)
        self.progress_at = 0.0       # when R last grew (see _stall_tick)
        self._progress_round = 0
        self._stall_walk = False
        self.started = False
        self.start_time = 0.0
        self.bootstrap: list[str] = []
        self.bootstrap_next = 0.0
        self.finished = False
        self.finish_sent = False
        self.finish_at: float | None = None   # max_rounds: leave at this time if still idle
        self._nonce = 0
        self._out: list[Action] = []
        self._local: list[tuple[bytes, object]] = []
        self.now = 0.0

    # ---- derived state -------------------------------------------------------------------
    def note_verified(self, k: int) -> None:
        """R_v grows with the rounds of accepted role-checked models (and bootstrap replies)."""
        if k > self.verified_round:
            self.verified_round = k

    def rv(self) -> int:
        """R_v with this node's own rounds: what it has evidence for. Hearsay never raises it."""
        return max(self.verified_round, self.train_idx, self.agg_idx)

    @property
    def round(self) -> int:
        """R = max(R_v, min(max_j r_j, R_v + round_window)): hearsay moves R at most the window."""
        rv = self.rv()
        return max(rv, min(self.view.max_round(), rv + self.cfg.window))

    def _cap(self) -> int:
        return self.rv() + self.cfg.window

    def own_record(self) -> ViewRecord:
        """This node's signed record. Re-signed when index, status or addresses change, or when R
        ran a quarter of tau past the signed last_active (its claim stays fresh enough to keep it
        active everywhere, and a view of 1,000 peers does not change every round)."""
        o = self._own
        r = self.round
        step = max(1, self.cfg.inactivity_threshold // 4)
        if (o is None or o.index != self.index or o.status != self.status or o.addresses != self.addresses
                or r >= o.last_active + step):
            o = self.auth.sign(ViewRecord(self.pk, r, self.index, self.status, self.addresses, pow=self.pow_nonce))
            self._own = o
            e = self.view.get(self.pk)
            self.view.entries[self.pk] = Entry(max(o.last_active, e.last_active if e else 0), o.index,
                                               o.status, o.addresses, o)
        return o

    def _advert(self) -> Advertise:
        return Advertise.of(self.own_record())

    def active(self, k: int) -> list[bytes]:
        return self.view.active(k, self.cfg.inactivity_threshold, self.pk)

    def order(self, k: int) -> list[bytes]:
        return sample_order(self.active(k), k)

    def sample(self, k: int) -> list[bytes]:
        return sample(self.active(k), k, self.cfg.sample_size)

    def role(self) -> str:
        if self.training is not None:
            return "training"
        if self.agg_idx and not self.completed_aggregation and self.buffer:
            return "aggregating"
        return "idle"

    def address_of(self, pk: bytes) -> tuple[str, ...]:
        e = self.view.get(pk)
        if e is not None and e.addresses:
            return e.addresses
        p = self.pending.get(pk)
        if p is not None:
            return p.record.addresses
        return self._reply_to.get(pk, ())

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
                self.unreachable.pop(sender, None)
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
        self._event(round_, "trained", model=model.hex()[:16])
        nxt = round_ + 1

        def send(aggs: list[bytes]) -> None:
            self._event(nxt, "send_trained", to=[a.hex()[:16] for a in aggs])
            for a in aggs:
                self._send(a, ModelMsg(nxt, ModelKind.TRAINED, model, self.view.records()))
            self._apply_pending()

        self._walk(self.order(nxt), self.cfg.aggregators, nxt, send)
        self.retries.append(_Retry(now + self.cfg.round_timeout, nxt, ModelKind.TRAINED, model,
                                   self.cfg.aggregators))
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
        def send(trainers: list[bytes]) -> None:
            if self.agg_idx > round_:
                self._event(round_, "aggregation_stale")
                return
            self._event(round_, "send_aggregated", to=[t.hex()[:16] for t in trainers])
            for t in trainers:
                self._send(t, ModelMsg(round_, ModelKind.AGGREGATED, model, self.view.records()))
            self._apply_pending()
            self._maybe_finish(round_)

        self._walk(self.order(round_), self.cfg.sample_size, round_, send)
        self.retries.append(_Retry(self.now + self.cfg.round_timeout, round_, ModelKind.AGGREGATED, model,
                                   self.cfg.sample_size))

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
        if self.round == 0 and self.train_idx == 0 and self.started and not self.finished:
            self._bootstrap_tick(now)
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
        ds.extend(r.at for r in self.retries)
        if self.pending:
            iv = self._probe_interval()
            ds.extend(min(j.first_sent + self.cfg.ping_timeout, j.last_sent + iv)
                      for j in self.pending.values() if not j.reached)
        if self.round == 0 and self.train_idx == 0 and self.started and not self.finished:
            ds.append(self.bootstrap_next)
        if self.cfg.max_rounds is not None and not self.finish_sent and self._passed(self.cfg.max_rounds):
            ds.append(self.finish_at if self.finish_at is not None else self.now)
        if self._stall_watch():
            ds.append(self.progress_at + self.cfg.stall_timeout)
        return min(ds) if ds else None

    def discovered(self, now: float, pk: bytes, addresses: tuple[str, ...]) -> list[Action]:
        """A transport found a peer (e.g. an MQTT retained announce): contact it like a bootstrap
        peer with a JOIN advert. Only a hint: the peer enters the view when it answers. During
        the bootstrap phase, round 1 also waits (up to bootstrap_timeout) until it is known."""
        self.now = now
        e = self.view.get(pk)
        if pk == self.pk or self.finished or not addresses or (e is not None and e.status == Status.JOIN):
            return self._flush()
        addr = addresses[0]
        if self.started and self.round == 0 and self.train_idx == 0 and addr not in self.bootstrap:
            self.bootstrap.append(addr)
        self._out.append(SendTo(addr, self._advert()))
        return self._flush()

    def departed(self, now: float, pk: bytes) -> list[Action]:
        """A transport reports that a peer is gone (e.g. an MQTT last will): mark it LEAVE at its
        current membership index, so any later JOIN from it (a higher index) wins again."""
        self.now = now
        e = self.view.get(pk)
        self.pending.pop(pk, None)
        if pk != self.pk and e is not None and e.status != Status.LEAVE:
            self.view.entries[pk] = Entry(e.last_active, e.index, Status.LEAVE, e.addresses)
            self.gone[pk] = e.index
            self._event(self.round, "peer_gone", peer=pk.hex()[:16])
        return self._flush()

    def _revive(self, pk: bytes) -> None:
        """A signed message from a peer marked gone by `departed` proves it is alive (e.g. the
        broker, not the peer, went away and published its will): undo the mark."""
        idx = self.gone.pop(pk, None)
        e = self.view.get(pk)
        if idx is not None and e is not None and e.status == Status.LEAVE and e.index == idx:
            self.view.entries[pk] = Entry(e.last_active, e.index, Status.JOIN, e.addresses)
            self._event(self.round, "peer_back", peer=pk.hex()[:16])

    def leave(self, now: float) -> list[Action]:
        """Graceful leave: a LEAVE advert to `s` random known peers."""
        self.now = now
        self.index += 1
        self.status = Status.LEAVE
        adv = self._advert()
        peers = [pk for pk in self.active(self.round) if pk != self.pk]
        self.rng.shuffle(peers)
        for pk in peers[: self.cfg.sample_size]:
            self._send(pk, adv)
        self.finished = True
        self.walks.clear()
        self.retries.clear()
        return self._flush()

    # ---- message dispatch ------------------------------------------------------------------
    def _dispatch(self, sender: bytes, msg: object) -> None:
        if isinstance(msg, Ping):
            if not self._ping_record(sender, msg.record):
                return
            # The ping's round is hearsay: it moves R at most to R_v + window. (Not rejected:
            # an idle node whose R_v lags must still answer, or it drops out of every sample.)
            self._bump(sender, max(self.round, min(msg.round, self._cap())))
            if msg.round >= self._cap():   # (a trainer of round r pings before it sends TRAINED(r + 1))
                self._witness(sender, msg.round)
            # A PONG carries the highest round this node took part in (holds its model or
            # aggregates it), not R, which may be hearsay from views: retries need to know
            # whether the peer really has the round (see _retry_tick). And our signed record.
            self._send(sender, Pong(max(self.train_idx, self.agg_idx), msg.nonce, self.own_record()))
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

    # ---- role checks (SPEC 15.1, "Role rules") ---------------------------------------------
    def _catch_up(self, sender: bytes, k: int) -> None:
        """A PONG round is the replier's own (the highest round it trained or aggregated), never
        hearsay. R_v rises to it when a bootstrap peer (reached at its bootstrap address, trusted
        for the round like its VIEW) says so, or to the round at least FINISH_WITNESSES distinct
        members reached: one member, whatever it sends, cannot move R_v past the honest ones."""
        if sender in self._boot_peers:
            self.note_verified(k)
            return
        rounds = sorted((r for pk, r in self._pong_round.items() if r > self.verified_round
                         and self.is_member(pk)), reverse=True)
        if len(rounds) >= FINISH_WITNESSES:
            self.note_verified(rounds[FINISH_WITNESSES - 1])

    def is_member(self, pk: bytes) -> bool:
        e = self.view.get(pk)
        if e is not None and e.status != Status.LEAVE:
            return True
        j = self.pending.get(pk)   # a joiner counts once it answered a ping at its signed address
        return j is not None and j.reached

    def ahead(self, pk: bytes, k: int) -> list[bytes]:
        """The candidates ahead of `pk` in order(k) that are not known to be unreachable. `pk`
        itself counts as active (its signed message is the evidence); self is always reachable.
        `pk` "may" act in round k as one of the first `n` when len(ahead(pk, k)) < n + slack."""
        cands = self.active(k)
        if pk not in cands:
            cands.append(pk)
        order = sample_order(cands, k)
        return [p for p in order[: order.index(pk)] if p not in self.unreachable]

    def admissible(self, sender: bytes, msg: ModelMsg) -> str | None:
        """The checks that need no walk, for the runtime to run before it stores or fetches
        anything for a MODEL (a stranger's model, bases and histories are refused at once)."""
        if sender == self.pk:
            return None
        if not self.is_member(sender):
            return "not_member"
        if msg.kind not in (ModelKind.AGGREGATED, ModelKind.TRAINED):
            return "wrong_model_kind"   # e.g. GOSSIP: this node runs MoDeST
        k = msg.round
        if k > self._cap() or k < 1:
            return "round_out_of_range"
        return None

    def _role_ok(self, sender: bytes, msg: ModelMsg, walks: int) -> bool:
        """TRAINED(k): we may aggregate k, the sender may have trained k-1. AGGREGATED(k): the
        sender may aggregate k. A rank that is too deep only because candidates ahead were not
        pinged lately is verified with a ping-walk over them first (the model is held)."""
        k = msg.round
        detail = {"sender": sender.hex()[:16], "model_kind": msg.kind.name.lower()}
        if (why := self.admissible(sender, msg)) is not None:
            if (why == "round_out_of_range" and walks > 0 and self._witness_walk is not None
                    and self._witness_walk + 1 >= k and self._hold_round(sender, msg, walks)):
                return False
            self._reject(k, why, verified=self.rv(), **detail)
            return False
        a, s, slack = self.cfg.aggregators, self.cfg.sample_size, self.cfg.role_slack
        if msg.kind == ModelKind.AGGREGATED:
            checks = [(sender, k, a + slack, "not_in_sample")]
        else:
            checks = [(self.pk, k, a + slack, "not_aggregator"), (sender, k - 1, s + slack, "not_in_sample")]
        for pk, r, width, reason in checks:
            ahead = self.ahead(pk, r)
            if len(ahead) < width:
                continue
            if walks > 0 and self._hold(sender, msg, ahead, width, walks):
                return False
            self._reject(k, reason, rank=len(ahead), allowed=width, **detail)
            return False
        return True

    def _hold(self, sender: bytes, msg: ModelMsg, ahead: list[bytes], width: int, walks: int) -> bool:
        """Ping the candidates ahead (those heard lately count as reachable); the walk stops at
        `width` answers. Then check again: the ones that timed out are known unreachable now."""
        key = (sender, msg.round, int(msg.kind))
        if key in self._held:
            return True       # a duplicate (retry) of a model already being verified
        if len(self._held) >= HOLD_MAX:
            return False
        self._held[key] = msg

        def done(_reachable: list[bytes]) -> None:
            held = self._held.pop(key, None)
            if held is not None and not self.finished:
                self._on_model(sender, held, walks - 1)

        self._event(msg.round, "verify_rank", sender=sender.hex()[:16], ahead=len(ahead), allowed=width)
        self._walk(ahead, width, msg.round, done)
        return True

    def _witness(self, sender: bytes, r: int) -> None:
        """A member pinged with a round at R_v + window or above (a lagging idle node is a candidate of
        a later round): ask the pinger and the next candidates of order(r) for their rounds, one
        such walk at a time. Their PONG rounds are their own (not hearsay) and raise R_v only to
        the witnessed round (_catch_up), so one member, however it pings, is one witness."""
        if self._witness_walk is not None or not self.is_member(sender):
            return
        self._witness_walk = r

        def done(_reachable: list[bytes]) -> None:
            self._witness_walk = None
            for key in list(self._held_round):   # checked again: in range now, or rejected
                held = self._held_round.pop(key)
                if not self.finished:
                    self._on_model(key[0], held, VERIFY_WALKS)

        cands = [sender] + [p for p in self.order(r) if p not in (sender, self.pk)]
        self._walk(cands, FINISH_WITNESSES + 1, r, done, fresh=False)

    def _hold_round(self, sender: bytes, msg: ModelMsg, walks: int) -> bool:
        """A model above the window while a witness walk runs: hold it until the walk ends."""
        key = (sender, msg.round, int(msg.kind))
        if key in self._held_round:
            return True
        if len(self._held_round) >= HOLD_MAX:
            return False
        self._held_round[key] = msg
        self._event(msg.round, "verify_round", sender=sender.hex()[:16], verified=self.rv())
        return True

    def _bump(self, pk: bytes, round_: int) -> None:
        if pk != self.pk:
            self.view.bump(pk, round_)

    # ---- membership: signed records, joins, round estimate ----------------------------------
    def _reject(self, round_: int, reason: str, **detail) -> None:
        """A rejected message or record: counted by the runtime under `reason`, changes no state."""
        self._out.append(Event(round_, "rejected", {"reason": reason, **detail}))

    def _accept(self, rec: ViewRecord) -> bool:
        """Store a verified record; a peer marked gone (`departed`) stays LEAVE at that index."""
        if not self.view.accept(rec):
            return False
        idx = self.gone.get(rec.peer)
        if idx is not None:
            if rec.index == idx:
                e = self.view.entries[rec.peer]
                self.view.entries[rec.peer] = Entry(e.last_active, e.index, Status.LEAVE, e.addresses, e.record)
            else:
                self.gone.pop(rec.peer, None)
        return True

    def _take_records(self, records: Iterable[ViewRecord]) -> None:
        """Merge relayed records: per peer the valid record with the highest (index, last_active).
        Records that would change nothing are not verified; unknown peers are probed first
        (pending). The first bad signature ends the merge (honest nodes relay only valid records)."""
        full = pending_full = no_pow = 0
        inactive_below = self.round - self.cfg.inactivity_threshold
        for rec in records:
            pk = rec.peer
            if pk == self.pk:
                continue
            if pk in self.view.entries:
                if not self.view.newer(rec):
                    continue
                if not self.auth.verify(rec):
                    self._reject(self.round, "bad_record_sig", peer=pk.hex()[:16])
                    break
                self._accept(rec)
                continue
            if rec.status != Status.JOIN or rec.last_active < inactive_below:
                continue   # nothing to learn from a departed or long-silent stranger
            j = self.pending.get(pk)
            if j is not None:
                if rec.newer_than(j.record):
                    if not self.auth.verify(rec):
                        self._reject(self.round, "bad_record_sig", peer=pk.hex()[:16])
                        break
                    j.record = rec
                continue
            if self._unreachable.get(pk, (-1, -1)) >= (rec.index, rec.last_active):
                continue   # probed in vain already; only a newer record earns a new probe
            if len(self.view) >= self.cfg.max_peers:
                full += 1
                continue
            if len(self.pending) >= self.cfg.max_pending:
                pending_full += 1
                continue
            if not self._pow_ok(rec):
                no_pow += 1
                continue
            if not self.auth.verify(rec):
                self._reject(self.round, "bad_record_sig", peer=pk.hex()[:16])
                break
            self._add_pending(rec, via_advert=False)
        if full:
            self._reject(self.round, "view_full", count=full)
        if pending_full:
            self._reject(self.round, "pending_full", count=pending_full)
        if no_pow:
            self._reject(self.round, "insufficient_pow", count=no_pow)

    def _pow_ok(self, rec: ViewRecord) -> bool:
        """--join-pow: a new member's key must carry that much work (one hash to check)."""
        return self.cfg.join_pow == 0 or pow_bits(rec.peer, rec.pow) >= self.cfg.join_pow

    def _add_pending(self, rec: ViewRecord, via_advert: bool) -> None:
        """Probe a joiner at its signed address; it joins only on a PONG with our nonce."""
        j = self.pending.get(rec.peer)
        if j is not None:
            if rec.newer_than(j.record):
                j.record = rec
            j.via_advert = j.via_advert or via_advert
            return
        if len(self.view) >= self.cfg.max_peers:
            self._reject(self.round, "view_full", peer=rec.peer.hex()[:16])
            return
        if len(self.pending) >= self.cfg.max_pending:
            self._reject(self.round, "pending_full", peer=rec.peer.hex()[:16])
            return
        j = _Join(rec, via_advert, self._secret.getrandbits(62), self.now, self.now)
        self.pending[rec.peer] = j
        self._event(self.round, "peer_join_pending", peer=rec.peer.hex()[:16])
        self._send(rec.peer, Ping(self.round, j.nonce, self.own_record()))

    def _reached(self, pk: bytes, j: _Join) -> None:
        j.reached = True
        if any(a in self.bootstrap for a in j.record.addresses):
            self._boot_peers.add(pk)
            claim = self._boot_claim.pop(pk, None)
            if claim is not None:
                self._verified_by_boot(pk, claim)
        # Before round 1 nobody is in a sample yet, so a join can apply at once; so can a peer
        # learned from views (it joined elsewhere already). Others wait for our next model send.
        if not j.via_advert or self.round == 0:
            self.pending.pop(pk, None)
            self._accept(j.record)
        if j.via_advert:
            self._send(pk, ViewShare(self.round, self.view.records()))

    def _verified_by_boot(self, pk: bytes, k: int) -> None:
        """A bootstrap peer told us the network's round: our record's claim jumps with it, so send
        the re-signed record back (the one it holds says round 0, which others would ignore)."""
        before = self.own_record()
        self.note_verified(k)
        if self.own_record() is not before:
            self._send(pk, self._advert())

    def _probe_tick(self, now: float) -> None:
        for pk, j in list(self.pending.items()):
            if j.reached:
                continue
            if now >= j.first_sent + self.cfg.ping_timeout:
                del self.pending[pk]
                self._remember(self._unreachable, pk, (j.record.index, j.record.last_active))
                self._event(self.round, "join_unreachable", peer=pk.hex()[:16])
            elif now >= j.last_sent + self._probe_interval():
                j.last_sent = now
                self._send(pk, Ping(self.round, j.nonce, self.own_record()))

    def _probe_interval(self) -> float:
        # A probe is pinged twice at most: a flood of unreachable joiners costs few requests.
        return max(self.cfg.ping_interval, self.cfg.ping_timeout / 2)

    @staticmethod
    def _remember(memo: dict, key: bytes, value) -> None:
        memo.pop(key, None)
        memo[key] = value
        while len(memo) > _MEMO:
            memo.pop(next(iter(memo)))

    def _on_advertise(self, sender: bytes, msg: Advertise) -> None:
        """An ADVERTISE is the sender's own signed record."""
        if sender == self.pk:
            return
        if msg.round > self._cap():
            self._reject(self.round, "round_out_of_range", round=msg.round, type="advertise")
            return
        rec = msg.record(sender)
        e = self.view.get(sender)
        j = self.pending.get(sender)
        if msg.status == Status.JOIN and e is None and j is None:
            t = self._advert_at.get(sender)
            if t is not None and self.now - t < 0.9 * self.cfg.ping_interval:   # 10 % for jitter
                self._reject(self.round, "join_rate_limited", peer=sender.hex()[:16])
                return
            # pow and caps before the signature: a flood of fresh keys costs no verification once
            # full. The per-key limit counts adverts turned away here and validly signed ones.
            why = ("insufficient_pow" if not self._pow_ok(rec) else "view_full" if len(self.view) >= self.cfg.max_peers
                   else "pending_full" if len(self.pending) >= self.cfg.max_pending else None)
            if why is not None:
                self._remember(self._advert_at, sender, self.now)
                self._reject(self.round, why, peer=sender.hex()[:16])
                return
        newer = self.view.newer(rec) if e is not None else (j is None or rec.newer_than(j.record))
        if newer and not self.auth.verify(rec):
            self._reject(self.round, "bad_record_sig", peer=sender.hex()[:16], type="advertise")
            return
        if msg.status == Status.LEAVE:
            self.pending.pop(sender, None)
            if e is not None and self._accept(rec):
                self._event(self.round, "peer_left", peer=sender.hex()[:16])
            return
        if e is not None:
            # A member re-signed only its last_active (a joiner that learnt the round): no view back.
            refresh = e.record is not None and rec.index == e.record.index and rec.last_active > e.record.last_active
            self._accept(rec)
            if not refresh:
                self._send(sender, ViewShare(self.round, self.view.records()))
            return
        if j is not None:
            if newer:
                j.record = rec
            j.via_advert = True
            return
        self._remember(self._advert_at, sender, self.now)
        self._add_pending(rec, via_advert=True)

    def _on_viewshare(self, sender: bytes, msg: ViewShare) -> None:
        """A VIEW answer. Its round is hearsay (bounded by the window), except from a bootstrap
        peer reached at its bootstrap address: a joiner must learn the network's round."""
        own = next((r for r in msg.view if r.peer == sender), None)
        boot = own is not None and any(a in self.bootstrap for a in own.addresses)
        if msg.round > self._cap() and not boot:
            self._reject(self.round, "round_out_of_range", round=msg.round, type="view")
            return
        self._take_records(msg.view)
        if boot and msg.round > self.rv():
            if sender in self._boot_peers:
                self._verified_by_boot(sender, msg.round)
            elif len(self._boot_claim) < 64 or sender in self._boot_claim:
                self._boot_claim[sender] = max(msg.round, self._boot_claim.get(sender, 0))
        self._bump(sender, min(msg.round, self._cap()))

    def _ping_record(self, sender: bytes, rec: ViewRecord | None) -> bool:
        """A PING carries the pinger's own record: a member's may update our view; a stranger's
        (e.g. a node probing us as a joiner) only tells where to send the PONG."""
        if rec is None:
            return True
        if rec.peer != sender:
            self._reject(self.round, "bad_record_sig", peer=rec.peer.hex()[:16], why="not the sender's")
            return False
        if sender in self.view.entries or sender in self.pending:
            self._take_records((rec,))
        elif sender not in self._reply_to or self._reply_to[sender] != rec.addresses:
            if not self.auth.verify(rec):
                self._reject(self.round, "bad_record_sig", peer=sender.hex()[:16], type="ping")
                return False
            self._remember(self._reply_to, sender, rec.addresses)
        return True

    def _passed(self, m: int) -> bool:
        """The network passed round m: our own evidence, or signed claims of FINISH_WITNESSES peers
        (one record with a huge last_active must not end a run early)."""
        if self.round <= m:
            return False
        if max(self.train_idx, self.agg_idx) > m:
            return True   # our own rounds (R_v may come from a bootstrap peer's word: not enough)
        n = 0
        for pk, e in self.view.entries.items():
            if pk != self.pk and e.record is not None and e.record.last_active > m:
                n += 1
                if n >= FINISH_WITNESSES:
                    return True
        return False

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
            if k > self.model_round:
                self._adopted(k, model)
                self._out.append(NewModel(k, model, "trainer"))
        if k == self.train_idx and self.training is None and not self.completed_training:
            if self.cfg.max_rounds is not None and k > self.cfg.max_rounds:
                self._maybe_finish(k)
                return
            self.training = k
            self._event(k, "training", sender=sender.hex()[:16])
            self._out.append(StartTraining(k, model))

    def _quorum(self, k: int, model: bytes, sender: bytes) -> bool:
        """accept_quorum: adopt round k's model once q distinct (role-checked) aggregators sent
        the same hash. Each sender has one vote per round; votes are kept for a few rounds."""
        q = self.cfg.accept_quorum
        if q <= 1:
            return True
        for r in [r for r in self.votes if r <= self.train_idx]:
            del self.votes[r]
        ballot = self.votes.setdefault(k, {})
        if not any(sender in v for v in ballot.values()):
            ballot.setdefault(model, set()).add(sender)
        while len(self.votes) > QUORUM_ROUNDS:
            del self.votes[min(self.votes)]
        backers = len(ballot.get(model, ()))
        if backers >= q:
            self.votes.pop(k, None)
            return True
        self._event(k, "quorum_wait", model=model.hex()[:16], votes=backers, needed=q,
                    hashes=len(ballot))
        return False

    def _on_trained(self, k: int, model: bytes, sender: bytes) -> None:
        """Aggregator side: a trained model for round k arrived from `sender`."""
        if k > self.agg_idx:
            self.agg_idx = k
            self.buffer = {sender: model}
            self.completed_aggregation = False
            self.agg_deadline = self.now + self.cfg.aggregation_timeout
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

    def _needed(self, k: int) -> int:
        s_eff = min(self.cfg.sample_size, len(self.active(k)))
        return max(1, math.ceil(s_eff * self.cfg.success_fraction - 1e-9))

    def _aggregate(self) -> None:
        self.completed_aggregation = True
        self.agg_deadline = None
        contributions = tuple(sorted(self.buffer.items()))
        self._event(self.agg_idx, "aggregate", contributors=len(contributions))
        self._out.append(Aggregate(self.agg_idx, contributions))

    # ---- helpers ---------------------------------------------------------------------------
    def _walk(self, candidates: list[bytes], count: int, round_: int, on_done, fresh: bool = True) -> None:
        def send_ping(pk: bytes, nonce: int) -> None:
            self._send(pk, Ping(self.round, nonce, self.own_record()))

        def reachable_now(pk: bytes) -> bool:
            if pk == self.pk:
                return True
            t = self.last_heard.get(pk)
            return fresh and t is not None and self.now - t <= self.cfg.fresh_contact

        box: list[PingWalk] = []

        def done(reachable: list[bytes]) -> None:
            for pk in box[0].failed if box else ():
                self.unreachable[pk] = self.now   # until it is heard from again (handle)
            on_done(reachable)

        w = PingWalk(list(candidates), count, self.cfg.ping_timeout, self.cfg.ping_interval,
                     send_ping, done, reachable_now, self._new_nonce)
        box.append(w)
        w.start(self.now)
        if not w.done:
            self.walks.append(w)

    def _new_nonce(self) -> int:
        self._nonce += 1
        return self._nonce

    def _send(self, pk: bytes, msg: object) -> None:
        if pk == self.pk:
            self._local.append((pk, msg))
        else:
            self._out.append(Send(pk, msg))  # type: ignore[arg-type]

    def _apply_pending(self) -> None:
        """Joins wait until after this node's next model send, so a joiner misses one sample
        (and until the joiner answered our probe)."""
        for pk, j in list(self.pending.items()):
            if j.reached:
                del self.pending[pk]
                self._accept(j.record)

    def _event(self, round_: int, kind: str, **detail) -> None:
        self._out.append(Event(round_, kind, detail))

    def _maybe_finish(self, k: int) -> None:
        if self.cfg.max_rounds is not None and k > self.cfg.max_rounds and not self.finish_sent:
            self.finish_sent = True
            self._out.append(Finished(f"round {k - 1} done (max_rounds={self.cfg.max_rounds})"))

    def _finish_tick(self, now: float) -> None:
        """max_rounds: a node that hears the network passed the last round (views, LEAVE adverts of
        nodes that finished) leaves after round_timeout, once idle, even if it was not sampled."""
        m = self.cfg.max_rounds
        if m is None or self.finish_sent or self.finished or not self._passed(m):
            self.finish_at = None
            return
        if self.finish_at is None:
            self.finish_at = now + self.cfg.round_timeout
        elif now >= self.finish_at:
            if self.training is None and not self.walks and (self.completed_aggregation or not self.buffer):
                self.finish_sent = True
                self._out.append(Finished(f"the network passed round {m} (max_rounds={m})"))
            else:
                self.finish_at = now + self.cfg.ping_timeout

    def _advertise_bootstrap(self, now: float) -> None:
        known = {a for e in self.view.entries.values() for a in e.addresses}
        adv = self._advert()
        for addr in self.bootstrap:
            if addr not in known:
                self._out.append(SendTo(addr, adv))
        self.bootstrap_next = now + self.cfg.ping_interval

    def _bootstrap_tick(self, now: float) -> None:
        if now < self.bootstrap_next:
            return
        known = {a for e in self.view.entries.values() for a in e.addresses}
        all_known = all(a in known for a in self.bootstrap)
        waited = now - self.start_time
        if (all_known and waited >= self.cfg.bootstrap_wait) or waited >= self.cfg.bootstrap_timeout:
            self.started = False  # bootstrap phase over
            if self.pk in self.sample(1):
                self._event(1, "start", peers=len(self.view) - 1)
                self._on_aggregated(1, self.initial_model, self.pk)
            return
        self._advertise_bootstrap(now)

    def _retry_tick(self, now: float) -> None:
        """No sign of progress `round_timeout` after a model send: ping-walk again and re-send
        to those that answer with an older round (a crashed peer is skipped by the walk)."""
        keep: list[_Retry] = []
        for r in self.retries:
            seen = self.round if r.kind == ModelKind.AGGREGATED else self.train_idx
            if seen > r.round or (r.kind == ModelKind.TRAINED and seen >= r.round) or self.finished:
                continue
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

    def _stall_watch(self) -> bool:
        """Idle with nothing pending: the only state in which no timer would ever fire again."""
        return (self.cfg.stall_timeout is not None and not self.finished and not self._stall_walk
                and not (self.round == 0 and self.train_idx == 0 and self.started)
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

    def _behind(self, pk: bytes, r: _Retry) -> bool:
        if pk != self.pk:
            return self.peer_round.get(pk, -1) < r.round
        mine = self.agg_idx if r.kind == ModelKind.TRAINED else self.train_idx
        return mine < r.round

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
        out, self._out = self._out, []
        return out
