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
DEGENERATE_MODEL = "degenerate_model"
WORSE_MODEL = "worse_model"
# Default adoption margin: nats of mean cross-entropy on the receiver's own data (AdoptionGate).
# Measured in benchmarks/adoption_check.py; SPEC section 15 has the numbers.
DEFAULT_ADOPT_MARGIN = 0.5
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


def degenerate(model: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray] | None) -> str | None:
    """Name of the first weight matrix (2-D or more) that is constant in ``model`` but not in
    ``reference``: SGD from a random start never yields one, while an all-zero (or all-equal)
    model stops ReLU networks from learning for good, whatever its loss says."""
    if reference is None:
        return None
    for name, arr in model.items():
        a = np.asarray(arr)
        r = reference.get(name)
        if r is None or a.ndim < 2 or a.size < 2 or not is_weight(name, a):
            continue
        r = np.asarray(r)
        if r.shape == a.shape and (a == a.flat[0]).all() and not (r == r.flat[0]).all():
            return name
    return None


def adoption_problem(loss: float, current_loss: float, margin: float = DEFAULT_ADOPT_MARGIN) -> str | None:
    """Why a received round model must not replace the current one, else None: it is worse by
    more than ``margin`` nats, both losses being the mean cross-entropy on the same sample of
    the receiver's own training data. ``margin <= 0`` turns the check off."""
    if margin <= 0:
        return None
    if not np.isfinite(loss):
        return f"loss {loss} on local data"
    if np.isfinite(current_loss) and loss > current_loss + margin:
        return f"loss {loss:.3f} on local data > current model's {current_loss:.3f} + margin {margin:.3g}"
    return None


def label_skew(labels: np.ndarray, num_classes: int) -> float:
    """KL(p || uniform) in nats of the local labels' distribution p over ``num_classes``: 0 for
    balanced data, ln(num_classes) for a single class."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    if y.size == 0 or num_classes < 2:
        return 0.0
    p = np.bincount(y[(y >= 0) & (y < num_classes)], minlength=num_classes).astype(np.float64)
    if p.sum() <= 0:
        return 0.0
    p /= p.sum()
    nz = p[p > 0]
    return float(np.log(num_classes) + np.sum(nz * np.log(nz)))


def local_margin(margin: float, labels: np.ndarray, num_classes: int) -> float:
    """The adoption margin of a node holding ``labels``: ``margin`` plus the skew of its labels
    (label_skew). On skewed local data honest round models move much more from round to round
    (each leans toward its trainers' classes: up to 1.95 nats at 100 nodes, dirichlet:0.1, against
    0.11 on iid data), so a fixed margin refuses them and the network falls apart (RESULTS 9.1).
    The term depends on the node's own data only: no peer can widen it. ``margin <= 0``: off."""
    if margin <= 0:
        return margin
    return margin + label_skew(labels, num_classes)


PROBE_SAMPLES = 512   # adoption check sample: enough for a stable mean loss, cheap to evaluate
PROBE_SHARE = 0.1     # at most this share of the local training data is held out for it
PROBE_MIN = 8         # below this the shard is too small to hold anything out


def probe_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, probe indices) of a local data set of n samples. The adoption check
    probes on samples the node never trains on: a model that memorised its own shard (a small
    network running for hours) would otherwise have a loss near 0 there, every honest round model
    would look much worse, and honest nodes would refuse each other for good (seen: a 3-node
    network whose nodes held 0.001 against honest models at 0.9-1.6, learning stopped)."""
    p = min(PROBE_SAMPLES, int(n * PROBE_SHARE))
    everything = np.arange(n, dtype=np.int64)
    if p < PROBE_MIN:
        return everything, everything
    probe = np.unique(np.linspace(0, n - 1, p).astype(np.int64))
    keep = np.ones(n, dtype=bool)
    keep[probe] = False
    return everything[keep], probe


class AdoptionGate:
    """The adoption check of one node (SPEC section 15).

    A round model is refused when its loss exceeds the *lowest* loss among the current model
    and the last ``RECENT`` round models this node accepted by more than the margin
    (``--adopt-margin``, fixed). Judging against the best recent model, not the current one, and
    never widening the margin from what was accepted, is what stops a legitimately sampled
    aggregator from ratcheting the model down one acceptable step at a time: whatever it sends,
    an accepted model is at most ``margin`` worse than the best of the last few. (A margin that
    followed the accepted rises was ratcheted from 0.25 to its cap in one minute by a member
    that aggregated most rounds, and accuracy fell from 0.86 to 0.47.)
    """

    RECENT = 8

    def __init__(self, margin: float = DEFAULT_ADOPT_MARGIN, skew: float = 0.0) -> None:
        self.cap = margin
        self.skew = skew   # label_skew of the local data (already in the margin; unfit_bases reads it)
        self.losses: list[float] = []   # probe losses of the last accepted round models
        self.rises: list[float] = []    # their rises over the reference (measurement only)

    @classmethod
    def for_labels(cls, margin: float, labels: np.ndarray, num_classes: int) -> AdoptionGate:
        """The gate of a node holding ``labels``: the margin widened by their skew (local_margin)."""
        return cls(local_margin(margin, labels, num_classes), label_skew(labels, num_classes))

    @property
    def margin(self) -> float:
        return max(self.cap, 0.0)

    def reference(self, current_loss: float) -> float:
        return min([current_loss, *self.losses[-self.RECENT:]])

    def check(self, loss: float, current_loss: float) -> str | None:
        if self.cap <= 0:
            return None
        ref = self.reference(current_loss)
        why = adoption_problem(loss, ref, self.cap)
        if why is None:
            # the model being replaced stays a reference too: that is what stops the ratchet
            if np.isfinite(current_loss) and (not self.losses or self.losses[-1] != current_loss):
                self.losses.append(current_loss)
            self.losses.append(loss)
            self.rises.append(loss - ref)
            del self.losses[: -self.RECENT], self.rises[: -self.RECENT]
        return why


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

    ``non_finite``: a float tensor holds NaN or +-inf. ``degenerate_model``: a weight matrix is
    constant where the reference's is not (see ``degenerate``). ``norm_out_of_range``: with a finite
    ``reference`` and ``max_ratio > 0``, ``update_ratio(model, reference) > max_ratio``.
    ``max_ratio = 0`` turns the norm check off; a non-finite reference skips it (a node whose own
    model went bad still rejects non-finite input).
    """
    bad = non_finite(model)
    if bad is not None:
        return NON_FINITE, f"tensor {bad!r} has non-finite values"
    if (bad := degenerate(model, reference)) is not None:
        return DEGENERATE_MODEL, f"weight tensor {bad!r} is constant"
    if reference is None or max_ratio <= 0 or non_finite(reference) is not None:
        return None
    ratio = update_ratio(model, reference)
    if not ratio <= max_ratio:
        return NORM_OUT_OF_RANGE, f"update norm ratio {ratio:.3g} > {max_ratio:g}"
    return None


__all__ = [
    "DEFAULT_ADOPT_MARGIN",
    "DEFAULT_MAX_UPDATE_NORM",
    "DEGENERATE_MODEL",
    "WORSE_MODEL",
    "AdoptionGate",
    "adoption_problem",
    "label_skew",
    "local_margin",
    "degenerate",
    "NON_FINITE",
    "NORM_EPS",
    "NORM_OUT_OF_RANGE",
    "check_model",
    "non_finite",
    "update_ratio",
]
