"""Name -> class registries for pipeline stages. Adding a stage = one class + ``@register(...)``.

Each stage class declares ``PARAMS``: pipeline parameter name -> constructor keyword, so that
``build_pipeline(..., krum_f=2)`` reaches ``KrumFilter(f=2)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

FILTERS: dict[str, type] = {}
COMBINERS: dict[str, type] = {}
CORRECTORS: dict[str, type] = {}
_KINDS = {"filter": FILTERS, "combine": COMBINERS, "correct": CORRECTORS}


def register(kind: str, name: str) -> Callable[[type[T]], type[T]]:
    table = _KINDS[kind]

    def deco(cls: type[T]) -> type[T]:
        if name in table:
            raise ValueError(f"{kind} stage {name!r} registered twice")
        cls.name = name  # type: ignore[attr-defined]
        table[name] = cls
        return cls

    return deco


def make_stage(kind: str, name: str, params: dict[str, Any]) -> Any:
    table = _KINDS[kind]
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; choose from {sorted(table)}")
    cls = table[name]
    mapping: dict[str, str] = getattr(cls, "PARAMS", {})
    return cls(**{kw: params[p] for p, kw in mapping.items() if p in params})


def known_params() -> set[str]:
    return {p for table in _KINDS.values() for cls in table.values() for p in getattr(cls, "PARAMS", {})}
