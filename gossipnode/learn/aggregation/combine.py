"""Combine stage: one tensor from the accepted contributions' tensors.

Combiners work on *models*. Because every contribution is ``base + delta`` with the same base
(MoDeST), the weighted mean of models equals ``base + weighted mean of deltas`` exactly, and the
coordinate-wise median / trimmed mean commute with adding the common base too; working on models
also covers gossip learning, where received models need not share a base.
Only contributions with filter weight > 0 reach a combiner; ``median`` and ``trimmed-mean``
treat those equally (order statistics have no natural weighting).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .registry import register


@register("combine", "mean")
class MeanCombiner:
    PARAMS: ClassVar[dict[str, str]] = {}

    def combine(self, stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``stack``: (k, *shape); ``weights``: (k,) summing to 1."""
        return np.tensordot(weights, stack, axes=1)

    def describe(self) -> dict[str, Any]:
        return {"name": "mean"}


@register("combine", "median")
class MedianCombiner:
    PARAMS: ClassVar[dict[str, str]] = {}

    def combine(self, stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
        return np.median(stack, axis=0)

    def describe(self) -> dict[str, Any]:
        return {"name": "median"}


@register("combine", "trimmed-mean")
class TrimmedMeanCombiner:
    """Coordinate-wise mean after dropping the ``floor(beta * k)`` lowest and highest values."""

    PARAMS: ClassVar[dict[str, str]] = {"trim_beta": "beta"}

    def __init__(self, beta: float = 0.1) -> None:
        if not 0.0 <= beta < 0.5:
            raise ValueError("trimmed-mean beta must be in [0, 0.5)")
        self.beta = beta

    def combine(self, stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
        k = len(stack)
        cut = min(int(np.floor(self.beta * k)), (k - 1) // 2)  # always keep at least one value
        srt = np.sort(stack, axis=0)
        return srt[cut : k - cut].mean(axis=0)

    def describe(self) -> dict[str, Any]:
        return {"name": "trimmed-mean", "beta": self.beta}
