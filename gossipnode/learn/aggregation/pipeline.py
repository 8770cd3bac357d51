"""The one aggregation pipeline: filter -> combine -> correct (``build_pipeline`` from names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..sanity import non_finite
from ..state import State, is_weight
from . import combine as _combine  # noqa: F401  (registers stages)
from . import correct as _correct  # noqa: F401
from . import filters as _filters  # noqa: F401
from .filters import twin_peers
from .registry import COMBINERS, CORRECTORS, FILTERS, known_params, make_stage
from .types import AggregateResult, AggregationError, Contribution


def _check_compatible(ref: State, other: State, who: str) -> None:
    if ref.keys() != other.keys():
        raise AggregationError(f"{who}: tensor names differ from the reference model")
    for k, v in ref.items():
        if other[k].shape != v.shape:
            raise AggregationError(f"{who}: tensor {k!r} has shape {other[k].shape}, expected {v.shape}")


class Pipeline:
    def __init__(self, filter: Any, combine: Any, correct: Any) -> None:
        self.filter, self.combiner, self.corrector = filter, combine, correct

    def aggregate(
        self,
        contributions: Sequence[Contribution],
        base: State | None,
        own: State | None = None,
        beta: float | None = 0.5,
    ) -> AggregateResult:
        """Aggregate ``contributions`` (MoDeST aggregator: ``own=None``) or merge them into ``own``.

        With ``own``: ``beta * own + (1 - beta) * combined`` (ALGORITHMS.md §3); ``beta=None``
        instead treats ``own`` as one more input with filter weight 1 (SybilWall's gossip rule).
        Weight tensors with more than one element are combined and corrected; scalar weights are
        combined only; buffers (norm statistics, integer tensors) come from ``own`` or else the
        first accepted contribution. If the filter rejects everything, the result is ``own``,
        else ``base``; with neither, ``AggregationError``.
        """
        peers = [c.peer for c in contributions]
        if len(set(peers)) != len(peers):
            raise AggregationError("duplicate peers among contributions")
        if beta is not None and not 0.0 <= beta <= 1.0:
            raise AggregationError("beta must be in [0, 1]")
        ref = own if own is not None else (contributions[0].model if contributions else base)
        if ref is None:
            raise AggregationError("nothing to aggregate: no contributions, own model or base")
        for c in contributions:
            _check_compatible(ref, c.model, f"contribution from {c.peer}")

        # Defence in depth (the node rejects non-finite models on receipt): a contribution with a
        # NaN or an infinity never reaches a filter, a combiner or a history, so it cannot make
        # every similarity NaN and zero the honest contributions. Same for a non-finite own model.
        bad = [c.peer for c in contributions if non_finite(c.model) is not None or non_finite(c.delta) is not None]
        if bad:
            contributions = [c for c in contributions if c.peer not in set(bad)]
        if own is not None and non_finite(own) is not None:
            own, beta = None, (0.0 if beta is not None else None)
        notes: dict[str, int] = {}

        raw_scores = self.filter.weights(contributions, base) if contributions else {}
        scores = {p: float(np.clip(np.nan_to_num(w, nan=0.0), 0.0, 1.0)) for p, w in raw_scores.items()}
        if own is None and getattr(self.filter, "round_twins", False):   # a round's updates, one base
            for p in twin_peers(contributions):
                scores[p] = 0.0
        accepted = [c for c in contributions if scores[c.peer] > 0]
        zeroed = [c.peer for c in contributions if scores[c.peer] <= 0]
        raw = np.array([scores[c.peer] for c in accepted], dtype=np.float64)

        def fallback_result() -> AggregateResult:
            fallback = own if own is not None else base
            if fallback is None or non_finite(fallback) is not None:
                raise AggregationError(
                    f"filter {self.filter.name} accepted no usable contribution of {len(peers)}")
            return AggregateResult({k: v.copy() for k, v in fallback.items()}, {p: 0.0 for p in peers},
                                   zeroed, scores, bad, notes)

        if not accepted:
            return fallback_result()

        own_in_combine = own is not None and beta is None
        total = raw.sum() + (1.0 if own_in_combine else 0.0)
        w_inputs = raw / raw.sum()  # weights of the received models alone (combine, v*)
        w_all = np.concatenate([[1.0], raw]) / total if own_in_combine else w_inputs

        out: State = {}
        for k, ref_t in ref.items():
            if not is_weight(k, ref_t):
                out[k] = (own if own is not None else accepted[0].model)[k].copy()
                continue
            inputs = np.stack([np.asarray(c.model[k], dtype=np.float64) for c in accepted])
            if own_in_combine:
                stack = np.concatenate([np.asarray(own[k], dtype=np.float64)[None], inputs])  # type: ignore[index]
                merged = self.combiner.combine(stack, w_all)
            else:
                merged = self.combiner.combine(inputs, w_inputs)
                if own is not None:
                    merged = beta * np.asarray(own[k], dtype=np.float64) + (1.0 - beta) * merged  # type: ignore[operator]
            if ref_t.size > 1:
                if own is None:  # everything that went into the merge, with its weight in it
                    src, w_src = inputs, w_inputs
                else:
                    own_t = np.asarray(own[k], dtype=np.float64)[None]  # type: ignore[index]
                    src = stack if own_in_combine else np.concatenate([own_t, inputs])
                    w_src = w_all if own_in_combine else np.concatenate([[beta], (1.0 - beta) * w_inputs])  # type: ignore[operator]
                with np.errstate(over="ignore", invalid="ignore"):
                    corrected = self.corrector.correct(merged, inputs, w_inputs, sources=(src, w_src))
                if np.isfinite(corrected).all():
                    merged = corrected
                else:  # e.g. a variance that overflowed: keep the uncorrected tensor
                    notes["correction_skipped"] = notes.get("correction_skipped", 0) + 1
            with np.errstate(over="ignore"):
                out[k] = np.asarray(merged, dtype=ref_t.dtype).reshape(ref_t.shape)
            if not np.isfinite(out[k]).all():  # finite inputs overflowed the tensor's dtype
                notes["non_finite_result"] = 1
                return fallback_result()

        final = dict(
            zip([c.peer for c in accepted], (w_all[1:] if own_in_combine else w_all).tolist(), strict=True)
        )
        weights = {p: final.get(p, 0.0) for p in peers}
        return AggregateResult(out, weights, zeroed, scores, bad, notes)

    def describe(self) -> dict[str, Any]:
        return {
            "filter": self.filter.describe(),
            "combine": self.combiner.describe(),
            "correct": self.corrector.describe(),
        }


def build_pipeline(
    filter: str = "sybilwall", combine: str = "mean", correct: str = "vc", **params: Any
) -> Pipeline:
    """Pipeline from stage names. ``params``: ``self_id``, ``auto_record`` (sybilwall/foolsgold),
    ``krum_f``, ``multikrum_m``, ``trim_beta``, ``vc_eps``, ``vc_rho``; unknown names are errors."""
    unknown = set(params) - known_params()
    if unknown:
        raise ValueError(
            f"unknown aggregation parameter(s) {sorted(unknown)}; known: {sorted(known_params())}"
        )
    return Pipeline(
        make_stage("filter", filter, params),
        make_stage("combine", combine, params),
        make_stage("correct", correct, params),
    )


def available_stages() -> dict[str, list[str]]:
    return {"filter": sorted(FILTERS), "combine": sorted(COMBINERS), "correct": sorted(CORRECTORS)}
