"""Role checks of the MoDeST core (SPEC 15.1, "Role rules"): who may send a model of round k,
given the deterministic order of each round; a rank that is too deep only because candidates
ahead were not pinged lately is verified with a ping-walk (the model is held meanwhile); and
the accept_quorum votes for aggregated models.

A mixin of ModestCore (modest.py); it shares the core's state and uses its `_walk`, `_event`,
`_reject` and `_on_model`. Sans-I/O.
"""
from __future__ import annotations

from .messages import ModelKind, ModelMsg


VERIFY_WALKS = 2      # a held model may trigger this many verification walks (SPEC 15.1)
HOLD_MAX = 16         # models held at once while their sender's (or our) rank is verified
QUORUM_ROUNDS = 4     # accept_quorum: rounds whose votes are kept (the newest above train_idx)


class Roles:
    def _init_roles(self) -> None:
        # Peers whose ping timed out in a walk and that were not heard from since (they do not
        # count as "ahead" of a sender), models held while a walk verifies a rank, and
        # accept_quorum votes: round -> model -> aggregators that sent it.
        self.unreachable: dict[bytes, float] = {}
        self._held: dict[tuple[bytes, int, int], ModelMsg] = {}
        self.votes: dict[int, dict[bytes, set[bytes]]] = {}

    def active(self, k: int) -> list[bytes]:
        return self.view.active(k, self.cfg.inactivity_threshold, self.pk)

    def order(self, k: int) -> list[bytes]:
        return self.view.order(k, self.cfg.inactivity_threshold, self.pk)

    def sample(self, k: int) -> list[bytes]:
        return self.view.sample(k, self.cfg.inactivity_threshold, self.pk, self.cfg.sample_size)

    def ahead(self, pk: bytes, k: int) -> list[bytes]:
        """The candidates ahead of `pk` in order(k) that are not known to be unreachable. `pk`
        itself counts as active (its signed message is the evidence); self is always reachable.
        `pk` "may" act in round k as one of the first `n` when len(ahead(pk, k)) < n + slack."""
        ahead = self.view.ahead(k, self.cfg.inactivity_threshold, self.pk, pk)
        return [p for p in ahead if p not in self.unreachable] if self.unreachable else ahead

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
