"""The learning worker: training, aggregation and merges, evaluation, the adoption check and
checkpoints. PyTorch runs on the learner's one worker thread (torch is only ever called from
that OS thread), numpy work in other threads; the event loop never blocks. Every method returns
its result; the node tells the core and the telemetry."""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict, deque
from functools import partial
from pathlib import Path
from typing import Any

from gossipnode.core import actions as act
from gossipnode.learn.attacks import canonical_attacks
from gossipnode.learn.compress import Compressor
from gossipnode.learn.learner import Learner, Model
from gossipnode.learn.sanity import AdoptionGate
from gossipnode.learn.trainer import TrainStats
from gossipnode.wire.tensors import apply_delta, make_delta

from . import checkpoint
from .aggregating import Aggregation, run_merge, run_pipeline
from .store import ModelStore

log = logging.getLogger("gossipnode.node")


class LearningWorker:
    def __init__(self, learner: Learner, store: ModelStore, pipeline: Any, compressor: Compressor | None,
                 adopt_margin: float, beta: float, attacks: tuple[str, ...], state_dir: Path) -> None:
        self.learner = learner
        self.store = store
        self.pipeline = pipeline
        self.compressor = compressor   # None: float32 deltas (error feedback inside)
        ds = getattr(learner, "dataset", None)
        self.adoption = (AdoptionGate(adopt_margin) if ds is None
                         else AdoptionGate.for_labels(adopt_margin, ds.y, ds.num_classes))
        self.adopted: deque[bytes] = deque(maxlen=8)   # recent round models adopted (trusted bases)
        self.beta = beta
        self.attacks = attacks   # attack rates measured at each evaluation (configured ones only)
        self.state_dir = state_dir
        self._probe_losses: OrderedDict[bytes, float] = OrderedDict()   # model -> adoption-check loss
        self.checkpoints_written = 0
        self.checkpoint_failures = 0
        self.last_checkpoint_error: str | None = None
        self._checkpoint_lock = threading.Lock()

    async def torch(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.learner.executor, partial(fn, *args))

    # ---- training -------------------------------------------------------------------------
    async def train(self, h: bytes, cancel: threading.Event) -> tuple[bytes, TrainStats]:
        """Train from model `h`; the new model is stored as a (compressed) delta of `h`.
        Raises LookupError when `h` is no longer held, TrainingCancelled when cancelled."""
        base = self.store.get(h)
        if base is None:
            raise LookupError("base model not held")
        self.store.pin(h)
        try:
            trained, stats = await self.torch(self.learner.train, base, cancel)
            delta, h2 = await asyncio.to_thread(make_delta, trained, base, self.compressor)
            model = await asyncio.to_thread(apply_delta, base, delta)
        finally:
            self.store.unpin(h)
        self.store.put(model, h2, parent=h, delta=delta)
        return h2, stats

    # ---- aggregation ----------------------------------------------------------------------
    def _aggregation(self) -> Aggregation:
        return Aggregation(self.store, self.pipeline, getattr(self.learner, "probe_loss", None), self.adoption)

    async def aggregate(self, a: act.Aggregate, current: bytes) -> tuple[bytes, dict[str, Any]] | None:
        held = [(pk, m, h) for pk, h in a.contributions if (m := self.store.get(h)) is not None]
        if not held:
            return None
        result, info = await asyncio.to_thread(run_pipeline, self._aggregation(), a.round, held, current,
                                               tuple(self.adopted))
        return self.store.put(result), info

    async def merge(self, a: act.Merge, current: bytes) -> tuple[bytes, dict[str, Any]] | bytes:
        """The merged model and what was done, or (nothing to merge) the model to go on with."""
        own = self.store.get(a.own) or self.store.get(current)
        held = [(pk, m, h) for pk, h in a.contributions if (m := self.store.get(h)) is not None]
        if own is None or not held:   # nothing to merge: go on with the received model (MoDeST)
            return a.contributions[0][1] if a.beta is not None and held else a.own
        beta = self.beta if a.beta is None else a.beta
        result, info = await asyncio.to_thread(run_merge, self.pipeline, a.round, own, held, beta)
        h = self.store.put(result)
        own_h = a.own if self.store.get(a.own) is not None else current
        if a.beta is not None and (why := await self.worse_than(result, own_h)):
            # SPEC 15.5: the model that starts a lineage merge skips the adoption check, the merge
            # result does not: a member that came back with a poisoned model cannot pull us down
            # by more than the margin; we go on from our own model (the round still heals).
            return h, info | {"refused": why}
        return h, info

    # ---- adoption check -------------------------------------------------------------------
    async def worse_than(self, model: Model, current: bytes) -> str | None:
        """The adoption check (SPEC section 15): a round model from another node must not be
        much worse on our own data than the model we hold. Role checks say who may send a round
        model; this says the model is fit to replace ours, whoever sent it."""
        probe = getattr(self.learner, "probe_loss", None)
        cur = self.store.get(current) if current else None
        if self.adoption.cap <= 0 or probe is None or cur is None:
            return None
        if (cur_loss := self._probe_losses.get(current)) is None:
            cur_loss = await asyncio.to_thread(probe, cur)
            self._probe_losses[current] = cur_loss
            while len(self._probe_losses) > 4:
                self._probe_losses.popitem(last=False)
        return self.adoption.check(await asyncio.to_thread(probe, model), cur_loss)

    def status(self) -> dict[str, Any]:
        # the adoption check's margin now and the recent honest loss rises it follows
        return {"adoption": {"margin": round(self.adoption.margin, 5),
                             "recent_rises": [round(r, 4) for r in self.adoption.rises]}}

    # ---- evaluation and checkpoints -------------------------------------------------------
    async def evaluate(self, h: bytes, k: int) -> dict[str, Any] | None:
        model = self.store.get(h)
        if model is None:
            return None
        # Both on the torch thread: the trainer's lock may be held by a training run.
        res, rates = await self.torch(lambda: (self.learner.evaluate(model),
                                               self.learner.attack_rates(model, self.attacks)))
        return {"round": k, "accuracy": round(res.accuracy, 5), "loss": round(res.loss, 5),
                "samples": res.samples, "model_hash": h.hex()} | ({"attack_rate": rates} if rates else {})

    def checkpoint(self, h: bytes, meta: dict[str, Any]) -> bool:
        """Save model `h`; False (counted, logged, shown in the status) when it fails."""
        with self._checkpoint_lock:  # evaluations may finish together; saves must not interleave
            model = self.store.get(h)
            if model is None:
                return True
            try:
                checkpoint.save(self.state_dir, model, meta | {"model": h.hex()})
            except Exception as e:
                self.checkpoint_failures += 1
                err = f"{type(e).__name__}: {e}"
                if err != self.last_checkpoint_error:
                    log.error("cannot write a checkpoint to %s: %s", self.state_dir, err)
                self.last_checkpoint_error = err
                return False
            if self.last_checkpoint_error is not None:
                log.info("checkpoints are written again")
            self.last_checkpoint_error = None
            self.checkpoints_written += 1
            return True

    def checkpoint_status(self) -> dict[str, Any]:
        return {"checkpoints_written": self.checkpoints_written, "checkpoint_failures": self.checkpoint_failures,
                "last_checkpoint_error": self.last_checkpoint_error}


def attack_names(attack: str, eval_attack: str) -> tuple[str, ...]:
    """Attack rates only where an attack is configured: this process's own (an attacker host)
    and the ones named by --eval-attack (honest nodes of a network with an attacker)."""
    return tuple(dict.fromkeys(((attack,) if attack else ()) + canonical_attacks(eval_attack)))
