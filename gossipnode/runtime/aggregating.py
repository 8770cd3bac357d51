"""Run the node's aggregation pipeline over contributions held in the model store."""
from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gossipnode.learn.aggregation import Contribution
from gossipnode.learn.aggregation.filters import NoFilter
from gossipnode.learn.aggregation.pipeline import Pipeline
from gossipnode.learn.sanity import adoption_problem
from gossipnode.learn.state import State, sub
from gossipnode.learn.learner import Model, to_model, to_state
from gossipnode.wire.identity import node_id
from gossipnode.wire.tensors import decoded_delta

if TYPE_CHECKING:
    from gossipnode.runtime.node import Node


def run_pipeline(node: Node, round_: int, held: list[tuple[bytes, Model, bytes]]) -> tuple[Model, dict[str, Any]]:
    """Aggregate (pk, model, hash) contributions; returns the model and what the pipeline did.

    The common base is the model most contributions were trained from (normally the round's
    aggregated model), preferring models this node adopted; updates are measured against it. So
    in MoDeST a SybilWall history of peer j accumulates j's updates relative to each round's base
    (FoolsGold's sum of updates).
    """
    parents = Counter(p for p in (node.store.parent(h) for _, _, h in held) if p is not None)
    # Bases this node adopted come first: Sybils that outnumber the honest contributors must not
    # choose the base that every update is measured against (their own poisoned model).
    adopted = set(getattr(node, "adopted", ()))
    pick = Counter({p: n for p, n in parents.items() if p in adopted}) or parents
    base_hash = pick.most_common(1)[0][0] if pick else node.current
    base_model = node.store.get(base_hash)
    base = to_state(base_model) if base_model is not None else None
    contributions = []
    for pk, model, h in held:
        state = to_state(model)
        d = node.store.delta_of(h)
        delta = to_state(decoded_delta(d[1])) if d is not None and d[0] == base_hash else (
            sub(state, base) if base is not None else state)
        contributions.append(Contribution(node_id(pk), state, delta, round_))
    res = node.pipeline.aggregate(contributions, base)
    own = node.store.get(node.current) if getattr(node, "current", None) else None
    state, fallback = self_check(node, res.state, contributions, base,
                                 to_state(own) if own is not None else base)
    info = {
        "contributors": len(held),
        "base": base_hash.hex()[:16],
        "weights": {p: round(w, 6) for p, w in res.weights.items()},
        "zeroed": res.zeroed,
        "non_finite": len(res.non_finite),  # contributions dropped for NaN/inf (defence in depth)
    } | res.notes | fallback
    return to_model(state), info


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


def self_check(node: Node, state: State, contributions: list[Contribution], base: State | None,
               current: State | None) -> tuple[State, dict[str, Any]]:
    """The aggregator's own adoption check (SPEC section 15): its result must not be much worse
    on its own data than the model it holds (``current``). A filter that put all weight on a
    lone outlier (FoolsGold weights favour the most dissimilar update, so one label-flipper among
    similar iid nodes gets it all), or updates against a poisoned base, fail it; then the
    unfiltered pipeline is tried, then the current model is sent again (no progress)."""
    probe = getattr(getattr(node, "learner", None), "probe_loss", None)
    gate = getattr(node, "adoption", None)
    if probe is None or gate is None or current is None or gate.cap <= 0:
        return state, {}
    margin = gate.margin
    base_loss = gate.reference(probe(to_model(current)))
    loss = probe(to_model(state))
    if adoption_problem(loss, base_loss, margin) is None:
        return state, {}
    # Contributions that are each much worse than the current model on our data go; the rest
    # are aggregated again, with the filter, then without it.
    kept = [c for c in contributions if adoption_problem(probe(to_model(c.model)), base_loss, margin) is None]
    out: dict[str, Any] = {"self_check": {"current_loss": round(base_loss, 5), "loss": round(loss, 5),
                                          "margin": round(margin, 5), "kept": len(kept)}}
    if kept:
        for name, p in (("screened", node.pipeline), ("unfiltered", unfiltered(node.pipeline))):
            with no_recording(p):
                res = p.aggregate(kept, base)
            if not any(w > 0 for w in res.weights.values()):
                continue   # the filter zeroed every kept update: its result is the base, no progress
            if adoption_problem(probe(to_model(res.state)), base_loss, margin) is None:
                return res.state, out | {"fallback": name}
    return {k: v.copy() for k, v in current.items()}, out | {"fallback": "current"}


def run_merge(node: Node, round_: int, own: Model, held: list[tuple[bytes, Model, bytes]],
              beta: float | None = None) -> tuple[Model, dict[str, Any]]:
    """Gossip learning: beta * own + (1 - beta) * combine(received), then the correction stage.

    Each contribution's delta is ``received - own``: SybilWall's D-PSGD/gossip definition, so the
    history of peer j accumulates (received model of j - this node's own model) at every merge.
    `beta`: the own model's weight (default --beta; a MoDeST lineage merge passes its work share).
    """
    beta = node.cfg.beta if beta is None else beta
    own_state = to_state(own)
    contributions = [Contribution(node_id(pk), (st := to_state(m)), sub(st, own_state), round_)
                     for pk, m, _ in held]
    res = node.pipeline.aggregate(contributions, None, own=own_state, beta=beta)
    info = {"contributors": len(held), "beta": beta,
            "weights": {p: round(w, 6) for p, w in res.weights.items()}, "zeroed": res.zeroed,
            "non_finite": len(res.non_finite)} | res.notes
    return to_model(res.state), info
