"""Rules of a round's aggregation shared by the daemon and the simulator: which base the updates
are measured against, and the aggregator's self-check (SPEC section 15).

May import: numpy, the rest of `learn/` (no torch here: the probe is passed in)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from contextlib import contextmanager
from typing import Any

from ..sanity import AdoptionGate, adoption_problem
from ..state import State
from .filters import NoFilter, twin_peers
from .pipeline import Pipeline
from .types import Contribution


def pick_base(parents: Counter[bytes], trusted: Collection[bytes] = ()) -> bytes | None:
    """The model most contributions were trained from, preferring models this node adopted
    (`trusted`): Sybils that outnumber the honest contributors must not choose the base that
    every update is measured against (their own poisoned model)."""
    pick = Counter({p: n for p, n in parents.items() if p in trusted}) or parents
    return pick.most_common(1)[0][0] if pick else None


# The rule acts only where this node's own loss is a fair judge: on labels skewed by more than
# this (KL from uniform, nats) honest lineages refuse each other's models now and then and go on
# merging only through such updates; dropping them kept them apart for good (3 nodes,
# Dirichlet(0.1): 0.90-0.92 -> 0.22-0.49 final accuracy, RESULTS 9.2). iid shards: about 0.003.
UNFIT_MAX_SKEW = 0.25


def unfit_bases(parents: Collection[bytes], trusted: Collection[bytes], model_of: Callable[[bytes], Any],
                probe: Callable[[Any], float], gate: AdoptionGate, current: Any) -> set[bytes]:
    """The parents no update may be built on: not adopted here (`trusted`) and much worse on this
    node's data than its best recent model (the adoption check). A member that sent a poisoned
    round model adopts it itself and trains from it; measured against the round's base, its
    update carries the poison, and mixed with two honest ones it stays within the self-check's
    margin, round after round (a 3-node cluster fell from 0.94 to 0.71-0.82 in 30 s). Off on
    skewed local data (`UNFIT_MAX_SKEW`)."""
    bad: set[bytes] = set()
    if gate.skew > UNFIT_MAX_SKEW:
        return bad
    ref: float | None = None
    for p in parents:
        if p in trusted or (m := model_of(p)) is None:
            continue
        if ref is None:
            ref = gate.reference(probe(current))
        if adoption_problem(probe(m), ref, gate.margin) is not None:
            bad.add(p)
    return bad


@contextmanager
def no_recording(p: Pipeline):
    """A second pass over the same contributions must not add their updates to the SybilWall
    histories again (the first pass recorded them)."""
    rec = getattr(p.filter, "auto_record", None)
    if rec is not None:
        p.filter.auto_record = False
    try:
        yield p
    finally:
        if rec is not None:
            p.filter.auto_record = rec


def unfiltered(p: Pipeline) -> Pipeline:
    """The same combine and correct stages without the filter."""
    return Pipeline(NoFilter(), p.combiner, p.corrector)


def self_check(pipeline: Pipeline, probe: Callable[[State], float], gate: AdoptionGate, state: State,
               contributions: list[Contribution], base: State | None,
               current: State) -> tuple[State, dict[str, Any]]:
    """The aggregator's own adoption check: its result must not be much worse on its own data
    than the model it holds (``current``). A filter that put all weight on a lone outlier
    (FoolsGold weights favour the most dissimilar update, so one label-flipper among similar iid
    nodes gets it all), or updates against a poisoned base, fail it; then the contributions that
    are each much worse go, and the rest is aggregated again with the filter (``screened``),
    then without it (``unfiltered``); else the current model is sent again (``current``).
    Copies (the filter's round twins: one attacker's model under many identities) never come
    back in a fallback: a backdoor keeps clean accuracy, so each copy passes the probe, and the
    unfiltered mean would hand the round to them (measured: RESULTS 13.2)."""
    margin = gate.margin
    base_loss = gate.reference(probe(current))
    loss = probe(state)
    if adoption_problem(loss, base_loss, margin) is None:
        return state, {}
    copies = twin_peers(contributions) if getattr(pipeline.filter, "round_twins", False) else set()
    kept = [c for c in contributions
            if c.peer not in copies and adoption_problem(probe(c.model), base_loss, margin) is None]
    out: dict[str, Any] = {"self_check": {"current_loss": round(base_loss, 5), "loss": round(loss, 5),
                                          "margin": round(margin, 5), "kept": len(kept),
                                          "copies": len(copies)}}
    if kept:
        for name, p in (("screened", pipeline), ("unfiltered", unfiltered(pipeline))):
            with no_recording(p):
                res = p.aggregate(kept, base)
            if not any(w > 0 for w in res.weights.values()):
                continue   # the filter zeroed every kept update: its result is the base, no progress
            if adoption_problem(probe(res.state), base_loss, margin) is None:
                return res.state, out | {"fallback": name}
    return {k: v.copy() for k, v in current.items()}, out | {"fallback": "current"}
