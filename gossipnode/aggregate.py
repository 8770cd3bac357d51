"""Run the node's aggregation pipeline over contributions held in the model store."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .learn.aggregation import Contribution
from .learn.state import sub
from .learner import Model, to_model, to_state
from .wire.identity import node_id
from .wire.tensors import decoded_delta

if TYPE_CHECKING:
    from .node import Node


def run_pipeline(node: Node, round_: int, held: list[tuple[bytes, Model, bytes]]) -> tuple[Model, dict[str, Any]]:
    """Aggregate (pk, model, hash) contributions; returns the model and what the pipeline did.

    The common base is the model most contributions were trained from (normally the round's
    aggregated model); updates are measured against it. So in MoDeST a SybilWall history of peer
    j accumulates j's updates relative to each round's base (FoolsGold's sum of updates).
    """
    parents = Counter(p for p in (node.store.parent(h) for _, _, h in held) if p is not None)
    base_hash = parents.most_common(1)[0][0] if parents else node.current
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
    info = {
        "contributors": len(held),
        "base": base_hash.hex()[:16],
        "weights": {p: round(w, 6) for p, w in res.weights.items()},
        "zeroed": res.zeroed,
        "non_finite": len(res.non_finite),  # contributions dropped for NaN/inf (defence in depth)
    } | res.notes
    return to_model(res.state), info


def run_merge(node: Node, round_: int, own: Model,
              held: list[tuple[bytes, Model, bytes]]) -> tuple[Model, dict[str, Any]]:
    """Gossip learning: beta * own + (1 - beta) * combine(received), then the correction stage.

    Each contribution's delta is ``received - own``: SybilWall's D-PSGD/gossip definition, so the
    history of peer j accumulates (received model of j - this node's own model) at every merge.
    """
    own_state = to_state(own)
    contributions = [Contribution(node_id(pk), (st := to_state(m)), sub(st, own_state), round_)
                     for pk, m, _ in held]
    res = node.pipeline.aggregate(contributions, None, own=own_state, beta=node.cfg.beta)
    info = {"contributors": len(held), "beta": node.cfg.beta,
            "weights": {p: round(w, 6) for p, w in res.weights.items()}, "zeroed": res.zeroed,
            "non_finite": len(res.non_finite)} | res.notes
    return to_model(res.state), info
