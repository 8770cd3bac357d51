"""Correct stage: applied per weight tensor to the merged result (ALGORITHMS.md §3).

Every corrector gets ``correct(merged, inputs, weights, sources=(models, their_weights))``:
``inputs``/``weights`` are the received models and their normalised filter weights;
``sources`` is everything that went into ``merged`` with its weight in it (for a gossip merge
the own model first, at ``beta``; in a MoDeST aggregation the same as the inputs).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .registry import register


@register("correct", "none")
class NoCorrection:
    PARAMS: ClassVar[dict[str, str]] = {}

    def correct(
        self,
        merged: np.ndarray,
        inputs: np.ndarray,
        weights: np.ndarray,
        sources: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        return merged

    def describe(self) -> dict[str, Any]:
        return {"name": "none"}


def _check(eps: float, rho: float) -> None:
    if eps <= 0 or not 0.0 <= rho <= 1.0:
        raise ValueError("vc needs eps > 0 and 0 <= rho <= 1")


def _rescale(merged: np.ndarray, target: float, eps: float, rho: float) -> np.ndarray:
    """``mu + (merged - mu) * f`` with ``f = sqrt((target + eps) / (Var(merged) + eps))``, damped by rho."""
    mu = float(merged.mean())
    factor = np.sqrt((max(target, 0.0) + eps) / (float(merged.var()) + eps))
    factor = 1.0 + rho * (factor - 1.0)
    return mu + (merged - mu) * factor


def merge_correlation(models: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """``(rho, v*)`` of one tensor's merge inputs ``models`` (k, *shape) with ``weights`` (k,), sum 1.

    ``v* = sum_i w_i Var(x_i)`` (population variance over the tensor's elements) and ``rho`` the
    weighted mean pairwise correlation of the inputs (each centred on its own mean), measured
    through the variance of their weighted mean: ``Var(sum w_i x_i) = sum_ij w_i w_j C_ij``, so
    ``rho = (Var(mean) - sum w_i^2 v_i) / ((sum w_i sqrt(v_i))^2 - sum w_i^2 v_i)``; O(k x size).
    Independently initialised models: rho ~ 0. Models trained from one base: rho ~ 0.95-0.99
    (their differences are the updates). One input, or no spread: rho = 1.
    """
    k = len(models)
    flat = models.reshape(k, -1).astype(np.float64, copy=False)
    centred = flat - flat.mean(axis=1, keepdims=True)
    v = (centred**2).mean(axis=1)
    v_star = float(weights @ v)
    if k < 2:
        return 1.0, v_star
    var_mean = float(((weights @ centred) ** 2).mean())
    own_terms = float((weights**2) @ v)
    cross = float(weights @ np.sqrt(v)) ** 2 - own_terms
    if cross <= 1e-30:
        return 1.0, v_star
    return float(np.clip((var_mean - own_terms) / cross, -1.0, 1.0)), v_star


@register("correct", "vc")
class VarianceCorrection:
    """Variance correction only where the merged models are uncorrelated (the default).

    Averaging k *uncorrelated* models divides the per-weight variance by ~k ("vanishing
    variance": independent initialisations, long-separated partitions); averaging models that
    share a base only averages out their update noise, which is what averaging is for, and
    restoring that lost variance amplifies the noise round after round (a 3-node MoDeST network
    collapsed from 0.94 to 0.21 accuracy by round 80 under the unconditional rule, ``vc-always``).

    So the rule measures, per tensor, the inputs' correlation ``rho`` (``merge_correlation``;
    the own model included in gossip merges) and corrects toward
    ``target = Var(m) + g(rho) * (v* - Var(m))`` with ``g = 1`` for ``rho <= max_corr / 2``,
    falling linearly to ``0`` at ``rho = max_corr`` (default 0.3). Tensors of fewer than
    ``MIN_VALUES`` (100) values (biases) are left alone: their correlation estimate is noise.
    (A first version with max_corr 0.5 and biases included still acted at the very first
    aggregations, where one epoch from the initial model decorrelates a Dirichlet(0.1) head to
    0.35, and that once was enough to move a 150-round run's final accuracy by up to 4 points.)
    Measured on this project (``docs/RESULTS.md`` §6; weight tensors of more than 1,000 values): MoDeST aggregations of
    updates from one base correlate at a median of 0.96-0.99 (minimum 0.66, in the first rounds;
    3 and 10 nodes, iid and Dirichlet(0.1)); same-init gossip merges at a median of 0.95-0.99
    (rare dips to 0.35 under Dirichlet(0.1)); independently initialised gossip nodes start at a
    median of 0.17 and pass 0.9 within a few merges each, so the correction acts in that phase.
    ``v*`` is the weighted mean variance of everything merged (own model at
    ``beta``). ``eps`` and ``rho`` (damping ``f' = 1 + rho (f - 1)``) as for ``vc-always``.
    """

    PARAMS: ClassVar[dict[str, str]] = {"vc_eps": "eps", "vc_rho": "rho", "vc_max_corr": "max_corr"}
    MIN_VALUES: ClassVar[int] = 100  # below this a correlation estimate is noise (+-0.3): left alone

    def __init__(self, eps: float = 1e-8, rho: float = 1.0, max_corr: float = 0.3) -> None:
        _check(eps, rho)
        if not 0.0 < max_corr <= 1.0:
            raise ValueError("vc needs 0 < max_corr <= 1")
        self.eps, self.rho, self.max_corr = eps, rho, max_corr
        self.tensors = 0  # weight tensors seen, and how many of them were corrected (observability)
        self.corrected = 0

    def gain(self, corr: float) -> float:
        """Share of the lost variance restored at inputs' correlation ``corr``."""
        if not np.isfinite(corr):  # e.g. variances that overflowed: leave the tensor alone
            return 0.0
        lo = self.max_corr / 2
        return float(np.clip((self.max_corr - corr) / (self.max_corr - lo), 0.0, 1.0))

    def correct(
        self,
        merged: np.ndarray,
        inputs: np.ndarray,
        weights: np.ndarray,
        sources: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        models, w = sources if sources is not None else (inputs, weights)
        self.tensors += 1
        if merged.size < self.MIN_VALUES:
            return merged
        corr, v_star = merge_correlation(models, w)
        g = self.gain(corr)
        if g <= 0.0:
            return merged
        self.corrected += 1
        v_m = float(merged.var())
        return _rescale(merged, v_m + g * (v_star - v_m), self.eps, self.rho)

    def describe(self) -> dict[str, Any]:
        return {"name": "vc", "eps": self.eps, "rho": self.rho, "max_corr": self.max_corr,
                "tensors": self.tensors, "corrected": self.corrected}


@register("correct", "vc-always")
class AlwaysVarianceCorrection:
    """The paper's rule at every merge: rescale ``merged`` so its variance is the received models' mean.

    ``v*`` is the weighted mean (filter weights) of the accepted *received* models' population
    variances. ``rho`` damps the factor: ``f' = 1 + rho * (f - 1)`` (rho = 1: full correction).
    Right for uncorrelated inputs; harmful where inputs share a base (see ``vc``). Kept for the
    experiments.

    ``eps`` defaults to 1e-8, not the reference code's 1e-4: an absolute 1e-4 is comparable to
    real weight variances (cnn1d's head: ~2.7e-3; averaged over 8 models: ~3e-4), so it
    under-corrects by 1-20 % per tensor. 1e-8 only guards the division.
    """

    PARAMS: ClassVar[dict[str, str]] = {"vc_eps": "eps", "vc_rho": "rho"}

    def __init__(self, eps: float = 1e-8, rho: float = 1.0) -> None:
        _check(eps, rho)
        self.eps, self.rho = eps, rho

    def correct(
        self,
        merged: np.ndarray,
        inputs: np.ndarray,
        weights: np.ndarray,
        sources: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``merged``: one tensor; ``inputs``: (k, *shape) received tensors; ``weights``: (k,), sum 1."""
        k = len(inputs)
        target = float(np.dot(weights, inputs.reshape(k, -1).var(axis=1)))
        return _rescale(merged, target, self.eps, self.rho)

    def describe(self) -> dict[str, Any]:
        return {"name": "vc-always", "eps": self.eps, "rho": self.rho}
