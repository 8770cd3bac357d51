"""JSON output that is always valid JSON: NaN and +-Infinity become null (issue 9).

Python's json module writes NaN/Infinity by default, which no strict JSON parser accepts (a
diverged model's loss, a 0/0 rate). Everything the node writes as JSON (REST answers,
status.json, the CLI's --json output) goes through `dumps`.
"""
from __future__ import annotations

import json
import math
from typing import Any


def clean(obj: Any) -> Any:
    """A copy of `obj` with every non-finite float (numpy floats included) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "item"):   # numpy scalars
        return clean(obj.item())
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """json.dumps that never emits NaN or Infinity (they become null)."""
    return json.dumps(clean(obj), allow_nan=False, **kw)
