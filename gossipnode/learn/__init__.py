"""Learning: models, datasets, local training, attacks and aggregation (plain PyTorch/numpy, no I/O loop)."""

from .data import DataError, Dataset, load_mnist1d, load_npz, partition, save_shards, shard
from .models import BUILTIN_MODELS, build_model
from .state import State, add, flatten, is_weight, load_into, state_from_module, sub
from .trainer import EvalResult, Trainer, TrainingCancelled, TrainStats, resolve_device

__all__ = [
    "BUILTIN_MODELS",
    "DataError",
    "Dataset",
    "EvalResult",
    "State",
    "TrainStats",
    "Trainer",
    "TrainingCancelled",
    "add",
    "build_model",
    "flatten",
    "is_weight",
    "load_into",
    "load_mnist1d",
    "load_npz",
    "partition",
    "resolve_device",
    "save_shards",
    "shard",
    "state_from_module",
    "sub",
]
