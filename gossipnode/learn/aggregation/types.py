"""Inputs and outputs of the aggregation pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..state import State


class AggregationError(ValueError):
    """Contributions cannot be aggregated (mismatched tensors, duplicates, nothing usable)."""


@dataclass(frozen=True)
class Contribution:
    peer: str
    model: State  # full model: base + delta
    delta: State  # model - base (the update; what history-based filters look at)
    round: int | None = None  # round the update was trained for; orders history records


@dataclass(frozen=True)
class AggregateResult:
    state: State
    weights: dict[str, float]  # normalised weight per contribution peer (0 for zeroed ones)
    zeroed: list[str]  # peers the filter gave weight 0
    scores: dict[str, float] = field(default_factory=dict)  # raw filter output in [0, 1]
    non_finite: list[str] = field(default_factory=list)  # peers dropped before the filter (NaN/inf)
    notes: dict[str, int] = field(default_factory=dict)  # safety fallbacks taken, e.g. correction_skipped
