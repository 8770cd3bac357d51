"""Run a node's aggregation pipeline over contributions held in its model store (the store
adapter around `learn.aggregation`; runs in a worker thread)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gossipnode.learn.aggregation import Contribution
from gossipnode.learn.aggregation.pipeline import Pipeline
from gossipnode.learn.aggregation.rounds import pick_base, self_check, unfit_bases
from gossipnode.learn.learner import Model, to_model, to_state
from gossipnode.learn.sanity import AdoptionGate
from gossipnode.learn.state import sub
from gossipnode.wire.identity import node_id
from gossipnode.wire.tensors import decoded_delta

from .store import ModelStore


@dataclass
class Aggregation:
    """What an aggregation reads: the store, the pipeline, and for the self-check the probe
    (loss on this node's own data, None: no check) and the adoption gate."""
    store: ModelStore
    pipeline: Pipeline
    probe: Callable[[Model], float] | None
    gate: AdoptionGate


def run_pipeline(agg: Aggregation, round_: int, held: list[tuple[bytes, Model, bytes]], current: bytes,
                 trusted: tuple[bytes, ...]) -> tuple[Model, dict[str, Any]]:
    """Aggregate (pk, model, hash) contributions; returns the model and what the pipeline did.

    The common base is the model most contributions were trained from (normally the round's
    aggregated model), preferring models this node adopted (`trusted`); updates are measured
    against it. So in MoDeST a SybilWall history of peer j accumulates j's updates relative to
    each round's base (FoolsGold's sum of updates)."""
    store = agg.store
    own = store.get(current) if current else None
    checking = agg.probe is not None and agg.gate.cap > 0
    own_state = to_state(own) if own is not None else None
    own_loss: list[float] = []   # the current model is probed once, for both checks

    def probe(m: Model) -> float:
        if m is not own:
            return agg.probe(m)
        if not own_loss:
            own_loss.append(agg.probe(m))
        return own_loss[0]
    unfit: set[bytes] = set()
    if checking and own is not None:
        parents_seen = {p for p in (store.parent(h) for _, _, h in held) if p is not None}
        unfit = unfit_bases(parents_seen, trusted, store.get, probe, agg.gate, own)
    dropped = [node_id(pk) for pk, _, h in held if store.parent(h) in unfit]
    held = [x for x in held if store.parent(x[2]) not in unfit]
    if not held:   # every update was built on a model we would refuse: no progress this round
        return own, {"contributors": len(dropped), "unfit_base": dropped, "fallback": "current"}
    parents = Counter(p for p in (store.parent(h) for _, _, h in held) if p is not None)
    base_hash = pick_base(parents, trusted) or current
    base_model = store.get(base_hash)
    base = to_state(base_model) if base_model is not None else None
    contributions = []
    for pk, model, h in held:
        state = to_state(model)
        d = store.delta_of(h)
        delta = to_state(decoded_delta(d[1])) if d is not None and d[0] == base_hash else (
            sub(state, base) if base is not None else state)
        contributions.append(Contribution(node_id(pk), state, delta, round_))
    res = agg.pipeline.aggregate(contributions, base)
    state, fallback = res.state, {}
    reference = own_state if own_state is not None else base
    if checking and reference is not None:
        state, fallback = self_check(agg.pipeline, lambda st: probe(own if st is own_state else to_model(st)),
                                     agg.gate, res.state, contributions, base, reference)
    info = {
        "contributors": len(held),
        "base": base_hash.hex()[:16],
        "weights": {p: round(w, 6) for p, w in res.weights.items()},
        "zeroed": res.zeroed,
        "non_finite": len(res.non_finite),  # contributions dropped for NaN/inf (defence in depth)
    } | ({"unfit_base": dropped} if dropped else {}) | res.notes | fallback
    return to_model(state), info


def run_merge(pipeline: Pipeline, round_: int, own: Model, held: list[tuple[bytes, Model, bytes]],
              beta: float) -> tuple[Model, dict[str, Any]]:
    """Gossip learning: beta * own + (1 - beta) * combine(received), then the correction stage.

    Each contribution's delta is ``received - own``: SybilWall's D-PSGD/gossip definition, so the
    history of peer j accumulates (received model of j - this node's own model) at every merge.
    `beta`: the own model's weight (--beta; a MoDeST lineage merge passes its work share)."""
    own_state = to_state(own)
    contributions = [Contribution(node_id(pk), (st := to_state(m)), sub(st, own_state), round_)
                     for pk, m, _ in held]
    res = pipeline.aggregate(contributions, None, own=own_state, beta=beta)
    info = {"contributors": len(held), "beta": beta,
            "weights": {p: round(w, 6) for p, w in res.weights.items()}, "zeroed": res.zeroed,
            "non_finite": len(res.non_finite)} | res.notes
    return to_model(res.state), info
