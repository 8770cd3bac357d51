"""Filter stage: a weight in [0, 1] per contribution (0 = excluded)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ..state import State, flatten, is_weight
from .history import HistoryStore
from .registry import register
from .sketch import sketch
from .types import Contribution

_SIMILARITY_TOL = 1e-9
TWIN_COSINE = 0.999   # two updates of one round this alike come from one source (see twin_peers)


_GRAM_CHUNK = 1 << 20   # values per tensor slice: n x 8 MiB of float64 at a time, however big the model


def _gram(deltas: Sequence[State]) -> np.ndarray | None:
    """The deltas' dot products in float64, one slice of one weight tensor at a time: no flat
    float64 copy of n models (10 updates of a 100 MB model would be 2 GB each copy). None if
    the deltas do not hold the same weight tensors."""
    n = len(deltas)
    g = np.zeros((n, n))
    for k, v in deltas[0].items():
        if not is_weight(k, v):
            continue
        flat = [np.asarray(d.get(k, ())).ravel() for d in deltas]
        if any(f.size != flat[0].size for f in flat):
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            for lo in range(0, flat[0].size, _GRAM_CHUNK):
                x = np.stack([f[lo:lo + _GRAM_CHUNK] for f in flat]).astype(np.float64)
                g += x @ x.T
    return g


def twin_peers(contributions: Sequence[Contribution]) -> set[str]:
    """The contributions whose update has a near-copy (cosine >= TWIN_COSINE) among the others.
    Updates of one round trained from the same base on different data are never this alike,
    while Sybils run by one attacker send one model under many identities. Histories miss these
    copies when the identities were seen apart (each identity's history sums the rounds its
    receiver saw), so a round's copies could keep weight. A zero update has no twin. Only for
    updates from one base (a MoDeST aggregation): in a merge, `received - own` of two peers that
    agree with each other but not with us can be this alike legitimately."""
    if len(contributions) < 2:
        return set()
    g = _gram([c.delta for c in contributions])
    if g is None or not np.isfinite(g).all():
        return set()   # huge or unlike updates: no twin, never a warning
    d = np.sqrt(np.maximum(np.diag(g), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        cs = np.nan_to_num(g / np.outer(d, d), nan=0.0, posinf=0.0, neginf=0.0)
    np.fill_diagonal(cs, 0.0)
    twins = (cs >= TWIN_COSINE).any(axis=1) & (d > 0)
    return {c.peer for c, t in zip(contributions, twins.tolist(), strict=True) if t}


def foolsgold_weights(histories: np.ndarray) -> np.ndarray:
    """FoolsGold weights for the rows of ``histories`` (n, P), ALGORITHMS.md §2 steps 1-4."""
    h = np.asarray(histories, dtype=np.float64)
    n = len(h)
    if n == 0:
        return np.zeros(0)
    ok = np.isfinite(h).all(axis=1)
    if not ok.all():  # a NaN/inf row would make every similarity NaN: weight 0, left out of the rest
        out = np.zeros(n)
        out[ok] = foolsgold_weights(h[ok])
        return out
    norms = np.linalg.norm(h, axis=1)
    unit = h / np.where(norms > 0, norms, 1.0)[:, None]  # zero history: similarity 0 to all
    cs = unit @ unit.T
    np.fill_diagonal(cs, 0.0)
    # Pardoning: an honest peer that merely resembles a peer of a tight cluster is scaled down
    # by v_i / v_j. (v_j > 0 guard: the ratio is meaningless for non-positive maxima.)
    v = cs.max(axis=1)
    pardon = (v[:, None] < v[None, :]) & (v[None, :] > 0)
    cs = np.where(pardon, cs * (v[:, None] / np.where(v[None, :] > 0, v[None, :], 1.0)), cs)
    w = np.clip(1.0 - cs.max(axis=1), 0.0, 1.0)
    # Identical histories give cs = 1 - 1e-16, not 1; without this cut the max-normalisation
    # would blow that rounding residue up to weight 1 when everyone has a twin.
    w[w < _SIMILARITY_TOL] = 0.0
    top = w.max()
    if top <= 0:
        return np.zeros(n)  # every history has an exact twin: no one is trusted
    w = w / top
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = np.log(w / (1.0 - w)) + 0.5
    return np.clip(np.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


@register("filter", "none")
class NoFilter:
    PARAMS: ClassVar[dict[str, str]] = {}

    def weights(self, contributions: Sequence[Contribution], base: State | None) -> dict[str, float]:
        return {c.peer: 1.0 for c in contributions}

    def describe(self) -> dict[str, Any]:
        return {"name": "none"}


@register("filter", "sybilwall")
class SybilWallFilter:
    """FoolsGold weights over all known histories, including distant ones learned by gossip.

    Owns a ``HistoryStore``. With ``auto_record`` each aggregated contribution's delta is added
    to its sender's history first (round = ``Contribution.round`` or one past the stored one).
    """

    PARAMS: ClassVar[dict[str, str]] = {"self_id": "self_id", "auto_record": "auto_record",
                                        "round_twins": "round_twins", "history_sketch": "sketch_dims"}
    use_gossip: ClassVar[bool] = True
    twins_default: ClassVar[bool] = True

    def __init__(
        self, self_id: str | None = None, store: HistoryStore | None = None, auto_record: bool = True,
        round_twins: bool | None = None, sketch_dims: int = 0,
    ) -> None:
        # sketch_dims > 0: histories are count-sketches that travel with identities (SPEC §15.2)
        self.store = store if store is not None else HistoryStore(
            self_id, sketch_dims if self.use_gossip else 0)
        self.self_id = self_id if self_id is not None else self.store.self_id
        self.auto_record = auto_record
        # weight 0 to near-copies among a round's updates (twin_peers(), applied by the pipeline
        # to aggregations from one base, not to merges); FoolsGold as published: off
        self.round_twins = self.twins_default if round_twins is None else round_twins

    def weights(self, contributions: Sequence[Contribution], base: State | None) -> dict[str, float]:
        if self.auto_record:
            for c in contributions:
                old = self.store.get(c.peer)
                rnd = c.round if c.round is not None else (old.round + 1 if old else 0)
                self.store.record_update(c.peer, rnd, c.delta)
        hist = {
            p: r.history
            for p, r in self.store.items()
            if p != self.self_id and (self.use_gossip or r.distance == 1)
        }
        for c in contributions:  # not recorded (auto_record off): judge by this update alone
            if c.peer not in hist:
                flat = flatten(c.delta)
                hist[c.peer] = sketch(flat, self.store.sketch_dims) if self.store.sketch_dims else flat
        peers = list(hist)
        w = foolsgold_weights(np.stack([hist[p] for p in peers]))
        by_peer = dict(zip(peers, w.tolist(), strict=True))
        return {c.peer: by_peer[c.peer] for c in contributions}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "histories": len(self.store), "gossip": self.use_gossip,  # type: ignore[attr-defined]
                "round_twins": self.round_twins, "sketch_dims": self.store.sketch_dims}


@register("filter", "foolsgold")
class FoolsGoldFilter(SybilWallFilter):
    """SybilWall's weights from direct histories only (no gossip)."""

    use_gossip: ClassVar[bool] = False
    twins_default: ClassVar[bool] = False


def _flat64(state: State) -> np.ndarray:
    """The weights as one float64 vector (no float32 round trip: float64 models do not overflow)."""
    parts = [np.asarray(v, dtype=np.float64).ravel() for k, v in state.items() if is_weight(k, v)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _krum_scores(vectors: np.ndarray, f: int) -> np.ndarray:
    n = len(vectors)
    if n == 1:
        return np.zeros(1)
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.sum(vectors**2, axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * vectors @ vectors.T, 0.0)
    np.fill_diagonal(d2, np.inf)
    k = min(max(n - f - 2, 1), n - 1)  # Krum's n - f - 2 closest; at least one when n is small
    with np.errstate(over="ignore", invalid="ignore"):
        scores = np.sort(d2, axis=1)[:, :k].sum(axis=1)
    return np.nan_to_num(scores, nan=np.inf)  # a NaN score (overflowed distances) ranks last


@register("filter", "krum")
class KrumFilter:
    """Krum (Blanchard et al.): keep the one model closest to its n - f - 2 nearest others.

    Distances between models (equal to distances between deltas when all share a base).
    """

    PARAMS: ClassVar[dict[str, str]] = {"krum_f": "f"}

    def __init__(self, f: int = 1) -> None:
        if f < 0:
            raise ValueError("krum f must be >= 0")
        self.f = f

    def _keep(self) -> int:
        return 1

    def weights(self, contributions: Sequence[Contribution], base: State | None) -> dict[str, float]:
        vecs = np.stack([_flat64(c.model) for c in contributions])
        scores = _krum_scores(vecs, self.f)
        keep = set(np.argsort(scores, kind="stable")[: self._keep()].tolist())
        return {c.peer: 1.0 if i in keep else 0.0 for i, c in enumerate(contributions)}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "f": self.f}  # type: ignore[attr-defined]


@register("filter", "multikrum")
class MultiKrumFilter(KrumFilter):
    """Multi-Krum: keep the m updates with the lowest Krum scores."""

    PARAMS: ClassVar[dict[str, str]] = {"krum_f": "f", "multikrum_m": "m"}

    def __init__(self, f: int = 1, m: int = 3) -> None:
        super().__init__(f)
        if m < 1:
            raise ValueError("multikrum m must be >= 1")
        self.m = m

    def _keep(self) -> int:
        return self.m

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "f": self.f, "m": self.m}  # type: ignore[attr-defined]
