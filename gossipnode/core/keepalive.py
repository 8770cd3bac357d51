"""Keep-alive pings (SPEC 15.7): members near the end of their tau window are pinged by nodes
that are current, and idle nodes probe inactive members sparingly.

At 1,000 nodes with s = 10 a node is sampled or pinged about every 50-100 rounds, as long as tau
or longer, and a record's `last_active` moves only when its owner re-signs it, which an idle
node does only once it hears a later round. So active sets shrank to ~40 % of the alive nodes
within 60 rounds (RESULTS 5), and probing every inactive member from every node (SPEC 15.5)
brought them back at a cost of O(N) pings per node (about 2,000 pings per round at 1,000 nodes).

A node that took part in round R or R - 1 (its R is the network's) pings up to 8-64
members per ping_interval (`_ka_burst`) whose signed `last_active` is between R - tau and R - tau / 2. The
PING carries R; the idle member's round moves with it, it re-signs its record and its PONG
carries that record, which this node's views relay on. Each pinger picks its members at random,
so the round's current nodes do not all ping the same ones. Idle nodes do
not keep others alive (their R is stale), and probe inactive members at most IDLE_PROBES at a
time, one per probe_max / 2: enough for a part of a healed partition to find the other.

A mixin of ModestCore (modest.py), sans-I/O.
"""
from __future__ import annotations

from .messages import Ping, Status

KEEPALIVE_BURST = 8   # pings per ping_interval by a current node, at least
KEEPALIVE_MAX = 64    # and at most (when many members are due at once)
IDLE_PROBES = 2       # inactive members an idle node probes at a time


class KeepAlive:
    def _init_keepalive(self) -> None:
        self._ka_at = 0.0
        self._ka_sent: dict[bytes, int] = {}   # member -> our R when we last kept it alive
        self._idle_probe_at = 0.0
        self._ka_due: list = [-1, []]   # [R, the members due at R's first tick, still due]

    def current(self) -> bool:
        """Took part in round R or R - 1 and is busy or made progress within 2 x ping_timeout: its R
        is the network's. (An idle node that heard nothing since its last round also took part
        in "R", but its R is stale.)"""
        return (self.started_once() and max(self.train_idx, self.agg_idx) >= self.round - 1
                and (self.now - self.progress_at <= 2 * self.cfg.ping_timeout or self.role() != "idle"))

    def _keepalive_tick(self, now: float) -> None:
        tau = self.cfg.inactivity_threshold
        if now < self._ka_at or tau < 4 or not self.cfg.keepalive or not self.current():
            return
        self._ka_at = now + self.cfg.ping_interval
        r = self.round
        lo, hi = r - tau, r - tau // 2
        again = r - tau // 4   # pinged before this: try again (a lost ping, a record still stale)
        if len(self._ka_sent) > 4 * self.cfg.max_pending:
            self._ka_sent = {pk: k for pk, k in self._ka_sent.items() if k > again}
        ents = self.view.entries

        def is_due(pk: bytes) -> bool:
            e = ents.get(pk)
            if e is None:
                return False
            signed = e.record.last_active if e.record is not None else e.last_active
            return (lo <= signed <= hi and e.status == Status.JOIN and pk != self.pk and pk not in self.unreachable
                    and pk not in self._probe and self._ka_sent.get(pk, again) <= again)

        # the view is scanned once per round R, the ticks in between filter what was due: a
        # record moves out of the window within R (someone kept it alive) but not into it
        if self._ka_due[0] != r:
            self._ka_due = [r, [pk for pk in ents if is_due(pk)]]
        due = self._ka_due[1] = [pk for pk in self._ka_due[1] if is_due(pk)]
        if not due:
            return
        # a random pick of our own, so the round's current nodes do not all ping the same members
        pick = due if len(due) <= self._ka_burst(len(due)) else self.rng.sample(due, self._ka_burst(len(due)))
        for pk in pick:
            self._ka_sent[pk] = r
            self._send(pk, Ping(r, self._new_nonce(), self.own_record()))

    def _ka_burst(self, due: int) -> int:
        """Enough for the due members to be pinged within the tau / 2 rounds they have left, by
        the s + a nodes current in a round, if each ticks once per round (rounds may be shorter
        than ping_interval: at 5,000 simulated nodes they are). A network that started at once
        has all of its members due together; 8 per tick was too few there (RESULTS 5.3)."""
        c = self.cfg
        need = -(-2 * due // (max(1, c.inactivity_threshold // 2) * (c.sample_size + c.aggregators)))
        return max(KEEPALIVE_BURST, min(KEEPALIVE_MAX, need))

    def _keepalive_deadline(self) -> float | None:
        if self.cfg.inactivity_threshold < 4 or not self.cfg.keepalive or not self.current():
            return None
        return self._ka_at

    def _idle_probe_ok(self, now: float, inactive: bool) -> bool:
        """May this probe go now? Probes of peers a walk lost always may; those of inactive members
        from an idle node one per probe_max / 2."""
        if not inactive or not self.cfg.keepalive or self.current():
            return True
        if now < self._idle_probe_at:
            return False
        self._idle_probe_at = now + self.cfg.probe_max / 2
        return True

    def _inactive_room(self) -> int:
        """How many more inactive members may go on the probe list? Idle nodes keep IDLE_PROBES."""
        if not self.cfg.keepalive or self.current():
            return 1 << 30
        return IDLE_PROBES - sum(1 for p in self._probe.values() if p.inactive)
