"""The node's learning side: data shard, model, trainer, aggregation pipeline.

Converts between the wire's RawTensor tuples and learn/'s numpy states. All methods are
blocking and meant to run in a worker thread.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gossipnode.learn.dataset import load_dataset
from gossipnode.core.messages import Model
from gossipnode.learn import data as ldata
from gossipnode.learn.models import build_model
from gossipnode.learn.attacks import attack_rate
from gossipnode.learn.sanity import probe_split
from gossipnode.learn.state import State, flatten, state_from_module
from gossipnode.learn.trainer import EvalResult, Trainer, TrainStats
from gossipnode.wire.tensors import from_raw, to_raw



def to_model(state: State) -> Model:
    return tuple(to_raw(name, np.asarray(arr)) for name, arr in state.items())


def to_state(model: Model) -> State:
    return {t.name: from_raw(t) for t in model}


@dataclass
class Learner:
    cfg: Any   # the node's settings (runtime.config.NodeConfig: data, model and training fields)
    dataset: ldata.Dataset
    trainer: Trainer
    initial: Model
    _history_size: int | None = None
    _split: tuple[int, ldata.Dataset, ldata.Dataset] | None = None   # (id of dataset, training part, probe part)
    # All torch work of a process runs on this one thread (see Node._torch).
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner"))

    @classmethod
    def create(cls, cfg: Any, init_seed: int | None = None) -> Learner:
        ds = load_dataset(cfg)
        seed = cfg.seed if init_seed is None else init_seed

        def factory():
            return build_model(cfg.model, ds.input_shape, ds.num_classes, seed)

        trainer = Trainer(factory, device=cfg.device, lr=cfg.lr, momentum=cfg.momentum,
                          batch_size=cfg.batch_size, local_epochs=cfg.local_epochs, seed=seed,
                          num_threads=cfg.threads)
        initial = to_model(state_from_module(factory()))
        return cls(cfg, ds, trainer, initial)

    @property
    def history_size(self) -> int:
        """Length of a flattened update (weights only): the size of a SybilWall history."""
        if self._history_size is None:
            self._history_size = int(flatten(to_state(self.initial)).size)
        return self._history_size

    def attack_rates(self, model: Model, names: tuple[str, ...] = ("label-flip", "backdoor")) -> dict[str, float]:
        """How far the evaluation attacks ``names`` got with this model (ALGORITHMS.md section 2)."""
        if not names:
            return {}
        state = to_state(model)
        try:
            return {name: round(attack_rate(self.trainer, state, self.dataset, name), 5)
                    for name in names}
        except ValueError:  # e.g. a user's data set without classes 0/1 or 1-D/2-D inputs
            return {}

    @property
    def device(self) -> str:
        return str(self.trainer.device)

    def _parts(self) -> tuple[ldata.Dataset, ldata.Dataset]:
        """The local data split once into what it trains on and what the adoption check probes
        (learn.sanity.probe_split); recomputed if `dataset` is replaced (the attacker host does)."""
        if self._split is None or self._split[0] != id(self.dataset):
            train_idx, probe_idx = probe_split(len(self.dataset.y))
            self._split = (id(self.dataset), self.dataset.subset(train_idx), self.dataset.subset(probe_idx))
        return self._split[1], self._split[2]

    def train(self, model: Model, cancel: threading.Event) -> tuple[Model, TrainStats]:
        state, stats = self.trainer.train(to_state(model), self._parts()[0], cancel)
        return to_model(state), stats

    def warm_up(self) -> float:
        """Trainer.warm_up on two local samples (start-up, before the node serves)."""
        if len(self.dataset.y) == 0:
            return 0.0
        return self.trainer.warm_up(self.dataset.x, self.dataset.y)

    def evaluate(self, model: Model) -> EvalResult:
        return self.trainer.evaluate(to_state(model), self.dataset.x_test, self.dataset.y_test)

    def probe_loss(self, model: Model) -> float:
        """Mean loss of ``model`` on the local samples held out from training (at most
        PROBE_SAMPLES): what the adoption check (learn.sanity.adoption_problem) compares."""
        probe = self._parts()[1]
        return self.trainer.probe_loss(to_state(model), probe.x, probe.y)

    def compatible(self, model: Model) -> str | None:
        """Why a received model cannot be used with our architecture (None if it can)."""
        if len(model) != len(self.initial):
            return f"{len(model)} tensors, expected {len(self.initial)}"
        for m, ref in zip(model, self.initial, strict=True):
            if (m.name, m.dtype, tuple(m.shape)) != (ref.name, ref.dtype, tuple(ref.shape)):
                return f"tensor {m.name!r} {m.dtype}{tuple(m.shape)} != {ref.name!r} {ref.dtype}{tuple(ref.shape)}"
        return None
