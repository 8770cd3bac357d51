"""`--compress` values, one parser for the daemon and the simulator (no numpy: the CLI checks them).

``none`` (float32 deltas), ``f16`` (float16 deltas), ``int8`` (int8 with one float32 scale per
block of 256 values) or ``topk:FRACTION`` (the largest FRACTION of the update's values, 0 < FRACTION
<= 1, as indices + float32 values). Every compressor keeps the part it dropped (error feedback) and
adds it to the node's next update. Wire layouts: protocol/SPEC.md section 5.1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("none", "f16", "int8", "topk")
INT8_BLOCK = 256          # values per int8 scale (the sender's choice; any 1..Q8_MAX_BLOCK decodes)
TOPK_MIN_FRACTION = 1e-6  # below this nothing useful is left


@dataclass(frozen=True)
class CompressSpec:
    kind: str = "none"
    fraction: float = 1.0   # topk only
    block: int = INT8_BLOCK  # int8 only

    def __str__(self) -> str:
        return f"topk:{self.fraction:g}" if self.kind == "topk" else self.kind


def parse_compress(spec: str | None) -> CompressSpec:
    """``none | f16 | int8 | topk:FRACTION``; raises ValueError with a one-line reason."""
    s = (spec or "none").strip().lower()
    kind, sep, arg = s.partition(":")
    if kind in ("none", "f16", "int8") and not sep:
        return CompressSpec(kind)
    if kind == "topk" and sep:
        try:
            f = float(arg)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and TOPK_MIN_FRACTION <= f <= 1:
            return CompressSpec("topk", fraction=f)
        raise ValueError(f"topk:FRACTION needs {TOPK_MIN_FRACTION:g} <= FRACTION <= 1, got {arg!r}")
    raise ValueError(f"want none, f16, int8 or topk:FRACTION (e.g. topk:0.02), got {spec!r}")
