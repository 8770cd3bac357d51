"""SPEC 15.5: the model that starts a lineage merge skips the adoption check, the merge result
does not. A member that came back from a (real or staged) partition with a poisoned model must
not get it merged into ours; an honest other lineage still is."""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np

from gossipnode.core.actions import Merge
from gossipnode.learn.aggregation import build_pipeline
from gossipnode.learn.learner import Learner
from gossipnode.runtime.config import load_config
from gossipnode.runtime.store import ModelStore
from gossipnode.runtime.worker import LearningWorker
from gossipnode.wire.tensors import from_raw, to_raw

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.attacks import collapse  # noqa: E402  (the attack: every sample labelled class 0)


def _noisy(model, scale: float, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for t in model:
        a = from_raw(t)
        if a.dtype.kind == "f":
            a = (a + rng.normal(0, scale * (a.std() + 1e-6), a.shape)).astype(a.dtype)
        out.append(to_raw(t.name, a))
    return tuple(out)


def test_merge_result_worse_than_own_model_is_refused(tmp_path) -> None:
    cfg = load_config(overrides={"state_dir": str(tmp_path), "mnist1d_samples": 1200, "model": "mlp",
                                 "local_epochs": 2})
    learner = Learner.create(cfg)
    store = ModelStore()
    worker = LearningWorker(learner, store, build_pipeline("none", "mean", "none"), None, cfg.adopt_margin,
                            cfg.beta, (), tmp_path)

    async def run() -> tuple[dict, dict, bytes, bytes]:
        h0 = store.put(learner.initial)
        own, _ = await worker.train(h0, None)   # some learning, so the probe loss means something
        poisoned = store.put(collapse(store.get(own), 20.0))
        honest = store.put(_noisy(store.get(own), 0.05, 1))
        peer = b"\x01" * 32
        _, bad = await worker.merge(Merge(9, own, ((peer, poisoned),), beta=0.5), own)
        _, good = await worker.merge(Merge(9, own, ((peer, honest),), beta=0.5), own)
        return bad, good, own, poisoned

    try:
        bad, good, own, poisoned = asyncio.run(run())
    finally:
        learner.executor.shutdown(wait=True)
    assert "refused" in bad and "local data" in bad["refused"], bad
    assert "refused" not in good, good
    # the poisoned model alone is far worse on our data than the margin: the check is not vacuous
    assert learner.probe_loss(store.get(poisoned)) > learner.probe_loss(store.get(own)) + 2 * cfg.adopt_margin
