"""Data-poisoning attacks used in the SybilWall evaluation, and how to measure their success."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gossipnode.learn.attack_names import ATTACKS, canonical_attack, canonical_attacks  # noqa: F401  (one spelling)
from .data import Dataset
from .state import State
from .trainer import Trainer

TRIGGER_LEN_1D = 4  # first values of a 1-D signal
TRIGGER_PATCH_2D = 3  # top-left square of an image


@dataclass(frozen=True)
class Attack:
    kind: str  # "label-flip" | "backdoor"
    source: tuple[int, int] = (0, 1)  # label flip: the two classes swapped
    target: int = 1  # backdoor: class the trigger maps to
    trigger_value: float | None = None  # backdoor: None -> 3.0 for 1-D signals, 1.0 for images
    fraction: float = 0.5  # backdoor: share of training samples triggered

    def __post_init__(self) -> None:
        if self.kind not in ("label-flip", "backdoor"):
            raise ValueError(f"unknown attack {self.kind!r}: want 'label-flip' or 'backdoor'")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError("backdoor fraction must be in (0, 1]")


def parse_attack(spec: str | Attack) -> Attack:
    """``label-flip`` / ``label_flip`` / ``backdoor`` (or an ``Attack``)."""
    if isinstance(spec, Attack):
        return spec
    return Attack(kind=spec.strip().lower().replace("_", "-"))


def add_trigger(x: np.ndarray, value: float | None = None) -> np.ndarray:
    """Copy of ``x`` (N, ...) with the trigger: first 4 values of 1-D signals ((N, L) or (N, C, L));
    a 3x3 top-left patch in every channel of images (N, C, H, W)."""
    out = np.array(x, dtype=np.float32, copy=True)
    if out.ndim in (2, 3):
        out[..., :TRIGGER_LEN_1D] = 3.0 if value is None else value
    elif out.ndim == 4:
        out[..., :TRIGGER_PATCH_2D, :TRIGGER_PATCH_2D] = 1.0 if value is None else value
    else:
        raise ValueError(f"no trigger defined for inputs of shape {x.shape[1:]}")
    return out


def label_flip(data: Dataset, source: tuple[int, int] = (0, 1)) -> Dataset:
    """The attacker's training set: only its samples of the two ``source`` classes, labels swapped."""
    a, b = source
    idx = np.flatnonzero((data.y == a) | (data.y == b))
    if len(idx) == 0:
        raise ValueError(f"no samples of classes {a} or {b} to flip")
    y = data.y[idx].copy()
    y = np.where(y == a, b, a).astype(np.int64)
    return replace(data, x=data.x[idx], y=y)


def backdoor(
    data: Dataset, target: int = 1, fraction: float = 0.5, value: float | None = None, seed: int = 0
) -> Dataset:
    """Trigger a seeded ``fraction`` of the training samples and relabel them ``target``.

    The rest stay clean, so the poisoned model still looks useful on clean data.
    """
    rng = np.random.default_rng(seed)
    n_poison = max(1, round(fraction * len(data.y)))
    idx = rng.choice(len(data.y), size=n_poison, replace=False)
    x = np.array(data.x, dtype=np.float32, copy=True)
    y = data.y.copy()
    x[idx] = add_trigger(x[idx], value)
    y[idx] = target
    return replace(data, x=x, y=y)


def poison(data: Dataset, attack: str | Attack, seed: int = 0) -> Dataset:
    att = parse_attack(attack)
    if att.kind == "label-flip":
        return label_flip(data, att.source)
    return backdoor(data, att.target, att.fraction, att.trigger_value, seed)


def attack_rate(trainer: Trainer, state: State, dataset: Dataset, attack: str | Attack) -> float:
    """Label flip: share of test samples of the source classes classified as the swapped label.
    Backdoor: share of triggered non-target test samples classified as the target."""
    att = parse_attack(attack)
    if att.kind == "label-flip":
        a, b = att.source
        idx = np.flatnonzero((dataset.y_test == a) | (dataset.y_test == b))
        if len(idx) == 0:
            return 0.0
        wanted = np.where(dataset.y_test[idx] == a, b, a)
        pred = trainer.predict(state, dataset.x_test[idx])
        return float(np.mean(pred == wanted))
    idx = np.flatnonzero(dataset.y_test != att.target)
    if len(idx) == 0:
        return 0.0
    pred = trainer.predict(state, add_trigger(dataset.x_test[idx], att.trigger_value))
    return float(np.mean(pred == att.target))
