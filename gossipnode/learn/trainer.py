"""Local SGD training and evaluation; called synchronously from a runtime worker thread."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Dataset
from .state import State, load_into, state_from_module


class TrainingCancelled(Exception):
    """Raised by ``Trainer.train`` when its cancel event is set (checked between batches)."""


@dataclass(frozen=True)
class TrainStats:
    samples: int  # samples seen (summed over epochs)
    steps: int
    epochs: int
    loss: float  # mean training loss over all batches
    seconds: float


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # 0.0 when samples == 0
    loss: float
    samples: int


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA, then MPS, then CPU. An explicit device that is not available is an error."""
    if isinstance(spec, torch.device):
        return spec
    spec = spec.strip().lower()
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not mps_ok:
            raise ValueError("device 'mps' requested but MPS is not available")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available")
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise ValueError(f"unknown device {spec!r}: want auto, cpu, cuda, cuda:N or mps")


class Trainer:
    """Owns one model instance (on ``device``) and trains/evaluates given states.

    ``num_threads`` sets ``torch.set_num_threads`` (process-wide): many node processes share
    few cores, so the default is 1. ``None`` leaves torch's setting alone.
    A lock serialises train/evaluate because they share the module.
    """

    _CACHE_SIZE = 4

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        device: str | torch.device = "auto",
        lr: float = 0.05,
        momentum: float = 0.9,
        batch_size: int = 20,
        local_epochs: int = 1,
        seed: int = 0,
        weight_decay: float = 0.0,
        num_threads: int | None = 1,
    ) -> None:
        if batch_size < 1 or local_epochs < 1:
            raise ValueError("batch_size and local_epochs must be >= 1")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.device = resolve_device(device)
        self.model = model_factory().to(self.device)
        self._factory = model_factory
        self._probe: nn.Module | None = None   # a second module for probe_loss (own lock)
        self._probe_lock = threading.Lock()
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.batch_size, self.local_epochs = batch_size, local_epochs
        self._rng = np.random.default_rng(seed)  # batch order; advances call by call
        self._lock = threading.Lock()
        self._cache: list[tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]] = []
        self._loss = nn.CrossEntropyLoss()

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Move each dataset (train split, test split) to the device once; keep the few most
        # recent ones. Entries hold the arrays themselves, so their ids cannot be reused.
        for i, (cx, cy, xt, yt) in enumerate(self._cache):
            if cx is x and cy is y:
                self._cache.append(self._cache.pop(i))
                return xt, yt
        xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        yt = torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64)).to(self.device)
        self._cache.append((x, y, xt, yt))
        del self._cache[: -self._CACHE_SIZE]
        return xt, yt

    def train(
        self, state: State, data: Dataset, cancel: threading.Event | None = None
    ) -> tuple[State, TrainStats]:
        """SGD for ``local_epochs`` epochs over ``data``'s training split, starting from ``state``."""
        if len(data.y) == 0:
            raise ValueError("cannot train on an empty dataset")
        with self._lock:
            t0 = time.perf_counter()
            load_into(self.model, state)
            xt, yt = self._tensors(data.x, data.y)
            # Fresh optimizer per call: momentum from a different starting model is meaningless.
            opt = torch.optim.SGD(
                self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
            self.model.train()
            n, steps, loss_sum = len(yt), 0, torch.zeros((), device=self.device)
            for _ in range(self.local_epochs):
                order = torch.from_numpy(self._rng.permutation(n)).to(self.device)
                for start in range(0, n, self.batch_size):
                    if cancel is not None and cancel.is_set():
                        raise TrainingCancelled()
                    idx = order[start : start + self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = self._loss(self.model(xt[idx]), yt[idx])
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach()  # no .item() per batch: avoids a GPU sync each step
                    steps += 1
            out = state_from_module(self.model)
            stats = TrainStats(
                samples=n * self.local_epochs,
                steps=steps,
                epochs=self.local_epochs,
                loss=float(loss_sum) / max(steps, 1),
                seconds=time.perf_counter() - t0,
            )
            return out, stats

    def warm_up(self, x: np.ndarray, y: np.ndarray) -> float:
        """One forward/backward/optimizer step on a throwaway copy of the module, and one
        evaluation pass: the first optimizer step imports `torch._dynamo` and more (about 1 s,
        under the GIL); done at start-up, before the node serves, the first real training does
        not stall the event loop. Touches neither the module, nor the batch order. Seconds taken."""
        t0 = time.perf_counter()
        with self._lock:
            model = copy.deepcopy(self.model)
            opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum,
                                  weight_decay=self.weight_decay)
            xt = torch.as_tensor(np.ascontiguousarray(x[:2], dtype=np.float32)).to(self.device)
            yt = torch.as_tensor(np.ascontiguousarray(y[:2], dtype=np.int64)).to(self.device)
            model.train()
            opt.zero_grad(set_to_none=True)
            self._loss(model(xt), yt).backward()
            opt.step()
            model.eval()
            with torch.no_grad():
                float(nn.functional.cross_entropy(model(xt), yt))
        return time.perf_counter() - t0

    @torch.no_grad()
    def predict(self, state: State, x: np.ndarray, batch_size: int = 2000) -> np.ndarray:
        """Predicted class per sample (int64 numpy)."""
        with self._lock:
            load_into(self.model, state)
            self.model.eval()
            preds = []
            for start in range(0, len(x), batch_size):
                xb = torch.as_tensor(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
                preds.append(self.model(xb.to(self.device)).argmax(1).cpu())
            return torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)

    @torch.no_grad()
    def probe_loss(self, state: State, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy of ``state`` on (x, y), on a module of its own, so that checking a
        received model never waits for a training run that holds the main module's lock."""
        if len(y) == 0:
            return 0.0
        with self._probe_lock:
            if self._probe is None:
                self._probe = self._factory().to(self.device)
            load_into(self._probe, state)
            self._probe.eval()
            xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
            yt = torch.as_tensor(np.ascontiguousarray(y, dtype=np.int64)).to(self.device)
            return float(nn.functional.cross_entropy(self._probe(xt), yt))

    @torch.no_grad()
    def evaluate(self, state: State, x: np.ndarray, y: np.ndarray, batch_size: int = 2000) -> EvalResult:
        if len(y) == 0:
            return EvalResult(accuracy=0.0, loss=0.0, samples=0)
        with self._lock:
            load_into(self.model, state)
            self.model.eval()
            xt, yt = self._tensors(x, y)
            correct = torch.zeros((), device=self.device)
            loss_sum = torch.zeros((), device=self.device)
            for start in range(0, len(yt), batch_size):
                logits = self.model(xt[start : start + batch_size])
                yb = yt[start : start + batch_size]
                loss_sum += nn.functional.cross_entropy(logits, yb, reduction="sum")
                correct += (logits.argmax(1) == yb).sum()
            n = len(yt)
            return EvalResult(accuracy=float(correct) / n, loss=float(loss_sum) / n, samples=n)
