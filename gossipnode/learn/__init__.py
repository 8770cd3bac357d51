"""Learning: models, datasets, local training, attacks and aggregation (plain PyTorch/numpy, no I/O loop).

Names are imported lazily, so that `gossipnode.learn.data` (numpy only) can be used without
loading torch.

May import: core/, wire/ (tensors travel as wire tensors), numpy, torch."""

from importlib import import_module
from typing import Any

_WHERE = {
    "DataError": "data", "Dataset": "data", "load_mnist1d": "data", "load_npz": "data",
    "partition": "data", "save_shards": "data", "shard": "data",
    "BUILTIN_MODELS": "models", "build_model": "models",
    "State": "state", "add": "state", "flatten": "state", "is_weight": "state", "load_into": "state",
    "state_from_module": "state", "sub": "state",
    "EvalResult": "trainer", "Trainer": "trainer", "TrainingCancelled": "trainer", "TrainStats": "trainer",
    "resolve_device": "trainer",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
