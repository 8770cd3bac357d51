"""An attacker host for measuring resilience: one process, K Sybil identities, one poisoned model.

Every Sybil is a full protocol participant (its own key, its own address under one HTTP server,
its own place in views and samples). Training is shared: all Sybils that train from the same
base model send the same poisoned update, as in the SybilWall evaluation.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

from aiohttp import web

from gossipnode.runtime.config import NodeConfig
from gossipnode.learn.attacks import poison
from gossipnode.learn.trainer import TrainStats
from gossipnode.learn.learner import Learner, Model
from gossipnode.runtime.node import Node
from gossipnode.wire.tensors import model_hash

log = logging.getLogger("gossipnode.attack")


@dataclass
class SharedTraining:
    """Wraps a Learner so that training from the same base is done once and reused."""
    inner: Learner
    _cache: dict[bytes, tuple[Model, TrainStats]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def train(self, model: Model, cancel: threading.Event) -> tuple[Model, TrainStats]:
        key = model_hash(model)
        with self._lock:  # the second Sybil waits for the first and gets the same update
            if key not in self._cache:
                self._cache[key] = self.inner.train(model, threading.Event())
                while len(self._cache) > 8:
                    self._cache.pop(next(iter(self._cache)))
            return self._cache[key]

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def sybil_configs(cfg: NodeConfig) -> list[NodeConfig]:
    # adopt_margin 0: the Sybils take every round model, as the SybilWall evaluation's attacker
    # does; judged on their flipped data the honest models would look worse and the Sybils would
    # aggregate from their own poisoned model instead (the malicious-aggregator case, measured
    # separately: benchmarks/attacks.py "malicious aggregator", gossipnode sim --sybil-aggregate).
    return [replace(cfg, state_dir=str(Path(cfg.state_dir) / f"sybil-{i}"), adopt_margin=0.0)
            for i in range(cfg.sybils)]


class SybilHost:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        learner = Learner.create(cfg)
        learner.dataset = poison(learner.dataset, cfg.attack.replace("labelflip", "label-flip"), cfg.seed)
        shared = SharedTraining(learner)
        self.app = web.Application()
        self.nodes: list[Node] = []
        for i, c in enumerate(sybil_configs(cfg)):
            self.nodes.append(Node(c, learner=shared, app=self.app, path_prefix=f"/sybil/{i}",  # type: ignore[arg-type]
                                   serve_rest=(i == 0), extra_transports=[]))
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        for n in self.nodes:
            await n.start()
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = getattr(self, "sock", None)  # bound by the CLI before loading torch
        await (web.SockSite(self._runner, sock) if sock is not None
               else web.TCPSite(self._runner, self.cfg.host, self.cfg.port)).start()
        log.warning("attacker: %d Sybil identities (%s) at %s/sybil/0..%d", len(self.nodes), self.cfg.attack,
                    self.cfg.address, len(self.nodes) - 1)

    async def stop(self, graceful: bool = True, reason: str = "stopped", timeout: float | None = None) -> None:
        await asyncio.gather(*(n.stop(graceful, reason, timeout) for n in self.nodes))
        await self._close()

    async def wait_stopped(self) -> None:
        await asyncio.gather(*(n.wait_stopped() for n in self.nodes))
        await self._close()

    async def _close(self) -> None:
        # stop() and wait_stopped() both get here: the first one closes the server, once.
        runner, self._runner = self._runner, None
        if runner is not None:
            try:
                await asyncio.wait_for(runner.cleanup(), 1.0)
            except Exception as e:
                log.warning("closing the attacker's HTTP server: %s", e or type(e).__name__)
