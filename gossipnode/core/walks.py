"""Ping-walks, and pre-walks that ping the next send's candidates while the node is busy
(SPEC 15.6).

A mixin of ModestCore (modest.py). A trainer's send to round k+1's aggregators and an
aggregator's send to round k's trainers each wait for a ping-walk, yet both candidate lists
are known before the model is ready (they depend only on the round and the view). So their
pings go out while the node trains or waits for updates: the walk at send time finds the
candidates fresh (heard within `fresh_contact`) and sends at once, or takes over the pre-walk's
pings still in flight instead of pinging again. Nothing else changes: a candidate that did not
answer, or answered too long ago, is pinged at send time as before.
"""
from __future__ import annotations

from .messages import Ping
from .pingwalk import PingWalk
from .sampling import order_key


class Walks:
    def _init_walks(self) -> None:
        self._nonce = 0
        self._prewalks: list[PingWalk] = []
        self._prewalked_agg = 0                              # last round whose trainers we pre-walked
        self._agg_checked = 0
        self._trainer_checked: tuple[int, ...] = ()          # the last 2 rounds r a PING made us look at order(r)
        self._train_started: float | None = None
        self._train_est = 0.0                                # seconds the last local training took
        self._prewalk_due: tuple[float, int] | None = None   # (when, round being trained)

    def _walk(self, candidates: list[bytes], count: int, round_: int, on_done, fresh: bool = True,
              pre: bool = False, more=None, margin: float = 0.0) -> PingWalk:
        def send_ping(pk: bytes, nonce: int) -> None:
            self._send(pk, Ping(self.round, nonce, self.own_record()))

        def reachable_now(pk: bytes) -> bool:
            if pk == self.pk:
                return True
            t = self.last_heard.get(pk)
            return fresh and t is not None and self.now - t <= self.cfg.fresh_contact - margin

        box: list[PingWalk] = []

        def done(reachable: list[bytes]) -> None:
            for pk in box[0].failed if box else ():
                self._lost(pk)   # skipped and probed until it is heard from again (handle)
            on_done(reachable)

        # Peers known out of reach are skipped, not pinged on every walk (probes find them again).
        def reachable_more() -> list[bytes]:
            return [p for p in more() if p not in self.unreachable]

        w = PingWalk([p for p in candidates if p not in self.unreachable], count, self.cfg.ping_timeout,
                     self.cfg.ping_interval, send_ping, done, reachable_now, self._new_nonce,
                     inherited={} if pre else self._take_prewalks(),
                     more=None if more is None else reachable_more)
        box.append(w)
        w.start(self.now)
        if not w.done:
            self.walks.append(w)
            if pre:
                self._prewalks.append(w)
        return w

    def _new_nonce(self) -> int:
        self._nonce += 1
        return self._nonce

    def _take_prewalks(self) -> dict:
        """The pings of pre-walks still in flight, for a real walk to wait on; the pre-walks end."""
        out: dict = {}
        for w in self._prewalks:
            if not w.done:
                out.update(w.pending)
                w.pending.clear()
                w.done = True
        self._prewalks.clear()
        return out

    # ---- pre-walks ------------------------------------------------------------------------
    def _prewalk_trainers(self, k: int) -> None:
        """This node became round k's aggregator: ping k's trainers while updates arrive."""
        if self.cfg.prewalk and k > self._prewalked_agg:
            self._prewalked_agg = k
            self._walk(self.order(k), self.cfg.sample_size, k, _nothing, pre=True)

    def _prewalk_on_ping(self, sender: bytes, r: int) -> None:
        """A member pinged us in round r: a trainer of r looking for r+1's aggregators (its own
        pre-walk, at the start of its training). If we are one, ping r+1's trainers now, a whole
        training earlier than the first update would. Once per round, and only for the round we
        are in or the next (a ping's round is hearsay)."""
        k = r + 1
        if not self.cfg.prewalk or not self.round <= r <= self.round + 1 or not self.is_member(sender):
            return
        self._prewalk_as_trainer(r + 1)   # the pinger's R is often a round behind its role
        self._prewalk_as_trainer(r)
        if k <= max(self._prewalked_agg, self.agg_idx):
            return
        if self._agg_checked == k:
            return
        self._agg_checked = k   # one look at order(k) per round, however many pings come
        if not self._may_aggregate(k):
            return
        if self.pk in self.view.sample(k, self.cfg.inactivity_threshold, self.pk, self.cfg.aggregators):
            self._prewalk_trainers(k)

    def _prewalk_as_trainer(self, r: int) -> None:
        """A PING of round r or r - 1 may be round r's aggregator walking to r's trainers (its
        own pre-walk, while updates arrive). If we are one, ping r+1's aggregators now: when our
        model of r arrives and our training ends, the walk to them finds them fresh. Where training
        is short (milliseconds) this takes a ping round trip off each round's critical path,
        which the pre-walk at training start cannot (RESULTS 11). Once per round; not in round 1;
        only while the last training took under fresh_contact / 4: with longer ones this early
        ping would be stale at the send, and the aggregator of r+1 would lose the PING of round r
        that starts its own pre-walk (measured: 0.65 s per round against 0.635 at 0.4 s training)."""
        if (r < 2 or r in self._trainer_checked or r <= self.train_idx or self._prewalk_due is not None
                or self._train_est >= self.cfg.fresh_contact / 4):   # the pre-walk at training start hides it
            return
        self._trainer_checked = (r, *self._trainer_checked[:1])
        if not self._may_aggregate(r, self.cfg.sample_size):
            return
        if self.pk in self.view.sample(r, self.cfg.inactivity_threshold, self.pk, self.cfg.sample_size):
            self._walk(self.order(r + 1), self.cfg.aggregators, r + 1, _nothing, pre=True)

    def _may_aggregate(self, k: int, count: int | None = None) -> bool:
        """A quick look before building A(k): with order keys uniform, a key whose expected rank
        among the members is over 8 (count + 1) is almost never among the first `count` (a, or s;
        e^-8 for 1). Only a pre-walk, an optimisation, is skipped on this estimate; roles never are."""
        n = self.view.size_hint()
        x = int.from_bytes(order_key(self.pk, k)[:8], "big") / 2.0 ** 64
        return x * n <= 8 * ((self.cfg.aggregators if count is None else count) + 1)

    def _prewalk_schedule(self, k: int) -> None:
        """Training round k starts: ping k+1's aggregators so they are fresh when it ends (timed
        from the last training's duration: an answer older than fresh_contact is stale)."""
        self._train_started = self.now
        # Not in round 1: its trainers start apart (each when its own bootstrap ends), and an
        # early ping of round 1 would lift a still-bootstrapping peer's R past 0 before it
        # starts its own round-1 training (its bootstrap tick runs only at R = 0).
        if self.cfg.prewalk and k >= 2:
            self._prewalk_due = (self.now + max(0.0, self._train_est - self.cfg.fresh_contact / 2), k)
            self._prewalk_tick(self.now)

    def _prewalk_trained(self) -> None:
        if self._train_started is not None:
            self._train_est = self.now - self._train_started
            self._train_started = None
        self._prewalk_due = None

    def _prewalk_tick(self, now: float) -> None:
        due = self._prewalk_due
        if due is None or now < due[0]:
            return
        self._prewalk_due = None
        if self.training == due[1]:
            # fresh enough only if still fresh when the training is expected to end (an early
            # pre-walk's answer, _prewalk_as_trainer, may be stale by then)
            left = 0.0 if self._train_started is None else max(0.0, self._train_started + self._train_est - now)
            self._walk(self.order(due[1] + 1), self.cfg.aggregators, due[1] + 1, _nothing, pre=True, margin=left)

    def _prewalk_deadline(self) -> float | None:
        return None if self._prewalk_due is None else self._prewalk_due[0]


def _nothing(_reachable: list[bytes]) -> None:
    """A pre-walk's result is the freshness of its answers (last_heard), nothing else."""
