"""Liveness of the MoDeST core (SPEC 15.1 "Stall restart"): re-sending a model after
round_timeout without progress, and restarting a round nobody is left to send.

A mixin of ModestCore (modest.py); it shares the core's state and uses its `_walk`, `_send`,
`_event` and `_send_aggregated`. Sans-I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

from .messages import ModelKind, ModelMsg, Ping


STALL_PROBES = 10


@dataclass
class _Retry:
    """Re-send after `round_timeout` without progress (a crashed aggregator or trainers)."""
    at: float
    round: int
    kind: ModelKind
    model: bytes
    count: int
    tries: int = 0


class Liveness:
    def _init_liveness(self) -> None:
        self.retries: list[_Retry] = []
        self._stalled_at: int | None = None      # R at the last stall check that found no progress
        self.progress_at = 0.0       # when R last grew (see _stall_tick)
        self._progress_round = 0
        self._stall_walk = False

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

    def _behind(self, pk: bytes, r: _Retry) -> bool:
        if pk != self.pk:
            return self.peer_round.get(pk, -1) < r.round
        mine = self.agg_idx if r.kind == ModelKind.TRAINED else self.train_idx
        return mine < r.round

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
