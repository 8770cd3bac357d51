"""Model sanity before use: every tensor finite, and an update's size bounded (SPEC section 15).

Pure numpy, used by the daemon on every received model (before it is stored or the protocol
core sees it) and by the simulator on the models its nodes exchange.

The size of an update is the ratio

    ratio(model, reference) = ||w(model) - w(reference)|| / (||w(reference)|| + NORM_EPS)

over the weight tensors (``state.is_weight``; buffers such as BatchNorm statistics are not
compared), computed in float64. The reference of a TRAINED delta is its base; that of a whole
model (AGGREGATED, GOSSIP, a TRAINED model sent whole) is the receiver's current model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .state import is_weight

NON_FINITE = "non_finite"
NORM_OUT_OF_RANGE = "norm_out_of_range"
NORM_EPS = 1e-6
# Default bound on ratio(). Honest ratios measured on MNIST-1D over 200 rounds
# (benchmarks/update_norms.py 200; 20 nodes, s = 5, sybilwall + mean + vc): trained deltas
# against their base at most 0.28 (cnn1d), 0.20 (mlp), 1.41 (cnn1d, lr 0.1, dirichlet:0.1);
# a round model against the initial model (the worst honest case: a fresh joiner receives the
# network's model) at most 5.2, 4.9 and 18.4; GOSSIP models between independently initialised
# nodes at most 1.7. 100 leaves a margin of 5x over the worst of these and still rejects every
# blown-up model (1e30, x1000 boosting).
DEFAULT_MAX_UPDATE_NORM = 100.0


def non_finite(state: Mapping[str, np.ndarray]) -> str | None:
    """Name of the first floating-point tensor holding a NaN or an infinity, else None."""
    for name, arr in state.items():
        a = np.asarray(arr)
        if np.issubdtype(a.dtype, np.floating) and a.size and not np.isfinite(a).all():
            return name
    return None


def update_ratio(model: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """||w(model) - w(reference)|| / (||w(reference)|| + NORM_EPS), weights only, in float64.

    Both must have the same tensors (the caller has checked compatibility); tensors missing
    from ``reference`` or of another shape are skipped. Finite float32/float16 inputs never
    overflow here; non-finite inputs give a non-finite ratio.
    """
    diff = ref = 0.0
    for name, arr in model.items():
        r = reference.get(name)
        a = np.asarray(arr)
        if r is None or not is_weight(name, a):
            continue
        r = np.asarray(r)
        if r.shape != a.shape:
            continue
        rv = r.astype(np.float64, copy=False).ravel()
        d = a.astype(np.float64, copy=False).ravel() - rv
        diff += float(np.dot(d, d))
        ref += float(np.dot(rv, rv))
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.sqrt(diff) / (np.sqrt(ref) + NORM_EPS))


def check_model(
    model: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray] | None = None,
    max_ratio: float = DEFAULT_MAX_UPDATE_NORM,
) -> tuple[str, str] | None:
    """``(reason, detail)`` if ``model`` must not be used, else None.

    ``non_finite``: a float tensor holds NaN or +-inf. ``norm_out_of_range``: with a finite
    ``reference`` and ``max_ratio > 0``, ``update_ratio(model, reference) > max_ratio``.
    ``max_ratio = 0`` turns the norm check off; a non-finite reference skips it (a node whose own
    model went bad still rejects non-finite input).
    """
    bad = non_finite(model)
    if bad is not None:
        return NON_FINITE, f"tensor {bad!r} has non-finite values"
    if reference is None or max_ratio <= 0 or non_finite(reference) is not None:
        return None
    ratio = update_ratio(model, reference)
    if not ratio <= max_ratio:
        return NORM_OUT_OF_RANGE, f"update norm ratio {ratio:.3g} > {max_ratio:g}"
    return None


__all__ = [
    "DEFAULT_MAX_UPDATE_NORM",
    "NON_FINITE",
    "NORM_EPS",
    "NORM_OUT_OF_RANGE",
    "check_model",
    "non_finite",
    "update_ratio",
]
