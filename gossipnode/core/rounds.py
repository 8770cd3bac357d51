"""The bounded round estimate of the MoDeST core (SPEC 4.1 "Round estimate", 15.1): R_v from
this node's own evidence, R = hearsay capped at R_v + round_window, the witness walk that lets
a lagging node catch up (PONG rounds are the repliers' own), and the max_rounds finish claims.

A mixin of ModestCore (modest.py); it shares the core's state. Sans-I/O.
"""
from __future__ import annotations

from .actions import Finished
from .messages import ModelMsg
from .roles import HOLD_MAX, VERIFY_WALKS


FINISH_WITNESSES = 2   # signed claims of distinct peers that the network passed max_rounds


class Rounds:
    def _init_rounds(self) -> None:
        self.verified_round = 0      # R_v: rounds seen from role-checked models (see note_verified)
        self.peer_round: dict[bytes, int] = {}   # the round each peer last reported in a pong (capped)
        self._pong_round: dict[bytes, int] = {}  # the same, uncapped (members only): witnesses, stall vetoes
        self._hi_pingers: dict[bytes, int] = {}  # the last members that pinged with a round far above R_v
        self._witness_walk: int | None = None    # the round a running witness walk checks
        self._held_round: dict[tuple[bytes, int, int], ModelMsg] = {}   # held while witnesses answer

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

    def _catch_up(self, sender: bytes, k: int) -> None:
        """A PONG round is the replier's own (the highest round it trained or aggregated), never
        hearsay. R_v rises to it when a bootstrap peer (reached at its bootstrap address, trusted
        for the round like its VIEW) says so, or to the round at least FINISH_WITNESSES distinct
        members reached: one member, whatever it sends, cannot move R_v past the honest ones."""
        if sender in self._boot_peers:
            self.note_verified(k)
            return
        # A member back from a partition (SPEC 15.5) ran its own rounds while apart: one such peer
        # (a lone node) may lift R_v, but at most the window plus twice our own rounds since the
        # fork, so one member still cannot push R_v arbitrarily.
        fork = self._returned.get(sender)
        if fork is not None and k <= self.rv() + self.cfg.window + 2 * max(0, self.rv() - fork):
            self._event(k, "round_from_partition", sender=sender.hex()[:16], fork=fork, verified=self.rv())
            self.note_verified(k)
            return
        rounds = sorted((r for pk, r in self._pong_round.items() if r > self.verified_round
                         and self.is_member(pk)), reverse=True)
        if len(rounds) >= FINISH_WITNESSES:
            self.note_verified(rounds[FINISH_WITNESSES - 1])

    def _witness(self, sender: bytes, r: int) -> None:
        """A member pinged with a round at R_v + window / 2 or above (a lagging idle node is kept
        alive by current nodes, keepalive.py, or is a candidate of a later round): ask the pinger,
        the last members that pinged with such rounds, round r - 1's trainers and the
        candidates of order(r) for their rounds, one such walk at a time. A laggard's view is
        stale, so its order(r) may name idle nodes; its recent high pingers took part lately.
        PONG rounds are the repliers' own (not hearsay) and raise R_v only to the witnessed round
        (_catch_up), so one member, however it pings, is one witness."""
        if not self.is_member(sender):
            return
        self._hi_pingers.pop(sender, None)
        self._hi_pingers[sender] = r
        while len(self._hi_pingers) > 2 * FINISH_WITNESSES + 2:
            self._hi_pingers.pop(next(iter(self._hi_pingers)))
        if self._witness_walk is not None:
            return
        self._witness_walk = r

        def done(_reachable: list[bytes]) -> None:
            self._witness_walk = None
            for key in list(self._held_round):   # checked again: in range now, or rejected
                held = self._held_round.pop(key)
                if not self.finished:
                    self._on_model(key[0], held, VERIFY_WALKS)

        # the sender and recent pingers first, then the first s of order(r - 1) and of order(r)
        # (the likely trainers of r - 1 and r)
        cands = [sender] + [p for p in reversed(self._hi_pingers) if p not in (sender, self.pk)]

        def more() -> list[bytes]:   # only when the pingers are not enough
            tau, s = self.cfg.inactivity_threshold, self.cfg.sample_size
            prev = self.view.sample(r - 1, tau, self.pk, s) if r > 1 else []
            return [p for p in prev + self.view.sample(r, tau, self.pk, s) if p != self.pk]

        self._walk(cands, FINISH_WITNESSES + 1, r, done, fresh=False, more=more)

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

    # ---- the last round (max_rounds) -------------------------------------------------------
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
