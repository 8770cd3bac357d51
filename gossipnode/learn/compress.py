"""Update compression with error feedback (pure numpy): float16, int8 with per-block scales, top-k.

A ``Compressor`` turns a node's float32 update (model - base, per tensor) into wire tensors
(`gossipnode.wire.tensors`: `<f4`, `<f2`, `q8`, `topk`; protocol/SPEC.md section 5.1). What the
compressor drops is kept as the node's *residual* and added to its next update (error feedback,
Seide et al. 2014 / Karimireddy et al. 2019), so nothing is lost over rounds, only delayed:

    corrected = update + residual
    sent      = C(corrected)                  # what every receiver decodes
    residual  = corrected - decode(sent)      # decoded exactly as a receiver does

Top-k picks the largest |values| over the whole model (one threshold for all float tensors; each
tensor then carries its own share), which keeps the big layers' important coordinates.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Mapping

import numpy as np

from gossipnode.learn.compress_names import CompressSpec, parse_compress
from gossipnode.core.messages import RawTensor
from gossipnode.wire.tensors import decode_values, encode_q8, encode_topk, to_raw

F16_MAX = float(np.finfo(np.float16).max)

__all__ = ["Compressor", "CompressSpec", "make_compressor", "parse_compress"]


class Compressor:
    """One node's compressor and its error-feedback residual (thread-safe: one update at a time).

    ``error_feedback=False`` is for callers whose base already carries what was dropped (the
    simulator's D-PSGD links, whose base is the receiver's copy of the sender's model)."""

    def __init__(self, spec: CompressSpec | str, error_feedback: bool = True) -> None:
        self.spec = parse_compress(spec) if isinstance(spec, str) else spec
        if self.spec.kind == "none":
            raise ValueError("no compressor for 'none' (send float32 deltas)")
        self.error_feedback = error_feedback
        self.residual: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Compressor({self.spec}, error_feedback={self.error_feedback})"

    def residual_norm(self) -> float:
        return float(math.sqrt(sum(float(np.dot(r.ravel(), r.ravel())) for r in self.residual.values())))

    def compress(self, deltas: Mapping[str, np.ndarray]) -> dict[str, RawTensor]:
        """Wire tensors for float32 updates ``deltas`` (name -> array); updates the residual.

        Raises ValueError (and keeps the residual) for an update with a NaN or an infinity: a
        diverged training is not silently made finite (the node's round fails, as without one)."""
        with self._lock:
            corrected: dict[str, np.ndarray] = {}
            for name, d in deltas.items():
                v = np.asarray(d, dtype=np.float32)
                r = self.residual.get(name) if self.error_feedback else None
                if r is not None and r.shape == v.shape:
                    v = v + r
                if not np.isfinite(v).all():
                    raise ValueError(f"tensor {name!r}: the update holds a NaN or an infinity")
                corrected[name] = v
            encoded = self._encode(corrected)
            if self.error_feedback:
                self.residual = {name: corrected[name] - decode_values(encoded[name]) for name in corrected}
            return encoded

    def _encode(self, corrected: dict[str, np.ndarray]) -> dict[str, RawTensor]:
        kind = self.spec.kind
        if kind == "f16":
            return {n: to_raw(n, np.clip(v, -F16_MAX, F16_MAX).astype(np.float16)) for n, v in corrected.items()}
        if kind == "int8":
            return {n: encode_q8(n, v, self.spec.block) for n, v in corrected.items()}
        return self._topk(corrected)

    def _topk(self, corrected: dict[str, np.ndarray]) -> dict[str, RawTensor]:
        names = list(corrected)
        flats = [corrected[n].ravel() for n in names]
        sizes = [f.size for f in flats]
        total = sum(sizes)
        k = min(total, max(1, math.ceil(self.spec.fraction * total))) if total else 0
        if k == total:
            chosen = np.arange(total, dtype=np.int64)
        elif k:
            allv = np.abs(np.concatenate(flats))
            chosen = np.sort(np.argpartition(allv, total - k)[total - k:]).astype(np.int64)
        else:
            chosen = np.zeros(0, np.int64)
        out: dict[str, RawTensor] = {}
        start = 0
        lo = 0
        for name, flat, size in zip(names, flats, sizes, strict=True):
            hi = int(np.searchsorted(chosen, start + size))
            local = chosen[lo:hi] - start
            out[name] = encode_topk(name, corrected[name].shape, local, flat[local])
            lo, start = hi, start + size
        return out


def make_compressor(spec: str | CompressSpec, error_feedback: bool = True) -> Compressor | None:
    """None for ``none`` (float32 deltas, the default), else a Compressor."""
    s = parse_compress(spec) if isinstance(spec, str) else spec
    return None if s.kind == "none" else Compressor(s, error_feedback)
