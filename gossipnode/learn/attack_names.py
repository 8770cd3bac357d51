"""Attack names, one spelling for the daemon and the simulator (no torch: the CLI checks them)."""
from __future__ import annotations

ATTACKS = ("label-flip", "backdoor")


def canonical_attack(spec: str | None) -> str:
    """One spelling for attack names everywhere (daemon and simulator): ``none``, ``label-flip`` or
    ``backdoor``. Accepts ``""``/``none``, ``labelflip``/``label_flip``/``label-flip``, any case."""
    s = (spec or "").strip().lower().replace("_", "-")
    if s in ("", "none"):
        return "none"
    if s == "labelflip":
        s = "label-flip"
    if s not in ATTACKS:
        raise ValueError(f"unknown attack {spec!r}: want none, label-flip (or labelflip) or backdoor")
    return s


def canonical_attacks(spec: str | None) -> tuple[str, ...]:
    """A comma-separated list of attacks (``--eval-attack``), canonical, no ``none``, no repeats."""
    out = [canonical_attack(p) for p in (spec or "").split(",")]
    return tuple(dict.fromkeys(a for a in out if a != "none"))
