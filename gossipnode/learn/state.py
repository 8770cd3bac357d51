"""Model states as plain numpy: the currency between the runtime, the wire and the trainer.

A ``State`` is ``dict[str, np.ndarray]`` in ``model.state_dict()`` order. Float tensors are
*weights*; normalisation statistics (BatchNorm running stats, ``num_batches_tracked``) and
integer tensors are *buffers*: they are never averaged, corrected or compared.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

State = dict[str, np.ndarray]

# Suffixes of normalisation statistics in torch's state_dict naming.
_NORM_STAT_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def is_weight(name: str, arr: np.ndarray) -> bool:
    """True for float tensors that are not normalisation statistics."""
    if not np.issubdtype(arr.dtype, np.floating):
        return False
    return name.rsplit(".", 1)[-1] not in _NORM_STAT_SUFFIXES


def weight_names(state: State) -> list[str]:
    return [k for k, v in state.items() if is_weight(k, v)]


def state_from_module(module: nn.Module) -> State:
    """CPU numpy copies of the module's state_dict (never views into live tensors)."""
    return {k: v.detach().to("cpu").numpy().copy() for k, v in module.state_dict().items()}


def load_into(module: nn.Module, state: State) -> None:
    """Copy ``state`` into ``module`` in place (keeps the module on its device)."""
    tensors = {k: torch.from_numpy(np.array(v, order="C")) for k, v in state.items()}  # writable copy
    module.load_state_dict(tensors, strict=True)


def _check_same_keys(a: State, b: State) -> None:
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))
        raise ValueError(f"states have different tensors: {missing[:5]}")


def sub(a: State, b: State) -> State:
    """``a - b`` in float32 for float tensors; non-float buffers are taken from ``a``."""
    _check_same_keys(a, b)
    out: State = {}
    for k, va in a.items():
        if np.issubdtype(va.dtype, np.floating):
            out[k] = va.astype(np.float32) - b[k].astype(np.float32)
        else:
            out[k] = va.copy()
    return out


def add(a: State, b: State) -> State:
    """``a + b`` in float32 for float tensors; non-float buffers are taken from ``a``."""
    _check_same_keys(a, b)
    out: State = {}
    for k, va in a.items():
        if np.issubdtype(va.dtype, np.floating):
            out[k] = va.astype(np.float32) + b[k].astype(np.float32)
        else:
            out[k] = va.copy()
    return out


def flatten(state: State) -> np.ndarray:
    """Concatenate the weight tensors (see ``is_weight``) into one float32 vector."""
    parts = [np.asarray(v, dtype=np.float32).ravel() for k, v in state.items() if is_weight(k, v)]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts)


def copy_state(state: State) -> State:
    return {k: v.copy() for k, v in state.items()}
