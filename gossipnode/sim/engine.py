"""The discrete-event engine shared by all simulated protocols.

One virtual clock and one event heap; an in-memory network with per-link latency and per-node
bandwidth (a node's uplink sends one message after the other, so bigger models take longer and
fan-outs queue); per-node training speed; churn; byte accounting; periodic evaluation.

Learning is real: ONE ``Trainer`` (one torch module) is shared by every simulated node; nodes
differ only by their data shard and their model state (numpy). Models are content-addressed in
one store (``hash -> State``), exactly as the protocol cores expect.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from gossipnode.learn import attacks
from gossipnode.learn import data as ldata
from gossipnode.learn.aggregation.pipeline import Pipeline
from gossipnode.learn.compress import Compressor
from gossipnode.learn.compress_names import parse_compress
from gossipnode.learn.sanity import AdoptionGate
from gossipnode.learn.models import build_model
from gossipnode.learn.state import State, state_from_module
from gossipnode.learn.trainer import Trainer

from .config import SimConfig, draw, parse_churn
from .learning import Learning, state_hash  # noqa: F401  (state_hash: re-exported for callers)
from .measure import Measure
from .sizes import SizeModel

ProgressFn = Callable[[float, dict[str, Any]], None]


def pk_of(seed: int, i: int) -> bytes:
    return hashlib.sha256(f"gossipnode-sim/{seed}/{i}".encode()).digest()


def load_data(cfg: SimConfig) -> ldata.Dataset:
    if cfg.dataset == "mnist1d":
        return ldata.load_mnist1d(**({"num_samples": cfg.mnist1d_samples} if cfg.mnist1d_samples else {}))
    return ldata.load_npz(cfg.dataset)


def _collect_refs(obj: Any, out: set[bytes], depth: int = 0) -> None:
    """Model hashes inside queued event arguments (bytes, tuples, messages/actions with models)."""
    if depth > 4:
        return
    if isinstance(obj, bytes):
        if len(obj) == 32:
            out.add(obj)
    elif isinstance(obj, tuple | list):
        for x in obj:
            _collect_refs(x, out, depth + 1)
    else:
        for attr in ("model", "own", "contributions"):
            v = getattr(obj, attr, None)
            if v is not None:
                _collect_refs(v, out, depth + 1)


class Engine(Learning, Measure):
    """Base of the protocol drivers. Subclasses implement ``setup``, ``begin``, ``crash``, ``join``,
    ``eval_models``, ``rounds_done`` and may override ``extra_metrics`` / ``referenced``."""

    name = "base"

    def __init__(self, cfg: SimConfig, data: ldata.Dataset | None = None) -> None:
        self.cfg = cfg
        self.now = 0.0
        self._q: list = []
        self._seq = itertools.count()
        self.rng = random.Random(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.churn = parse_churn(cfg.churn)
        self.n_joins = sum(s.count * s.times for s in self.churn if s.kind == "join")
        self.n_honest_cap = cfg.nodes + self.n_joins
        self.n_sybils = cfg.n_sybils
        self.sybil_ids = list(range(self.n_honest_cap, self.n_honest_cap + self.n_sybils))
        self.n_total = self.n_honest_cap + self.n_sybils + self.extra_nodes()
        self.honest_started: list[int] = list(range(cfg.nodes))
        self.alive = np.zeros(self.n_total, dtype=bool)
        self.alive[: cfg.nodes] = True
        self.alive[self.n_honest_cap:] = True
        self.next_join = cfg.nodes
        # ---- learning ----
        self.data = data if data is not None else load_data(cfg)
        self.shards = ldata.partition(self.data.y, self.n_honest_cap, cfg.partition, cfg.seed)
        self._datasets: dict[int, tuple[ldata.Dataset, ldata.Dataset]] = {}   # node -> (training, probe)
        ds = self.data

        def factory(seed: int = cfg.seed):
            return build_model(cfg.model, ds.input_shape, ds.num_classes, seed)

        self.model_factory = factory
        self.trainer = Trainer(factory, device="cpu", lr=cfg.lr, momentum=cfg.momentum,
                               batch_size=cfg.batch_size, local_epochs=cfg.local_epochs, seed=cfg.seed,
                               num_threads=cfg.threads)
        self.models: dict[bytes, State] = {}
        self.parent: dict[bytes, bytes] = {}
        init = state_from_module(factory())
        self.initial = self.put(init)
        self._init_of: dict[int, bytes] = {}
        self.sizes = SizeModel(init)
        # ---- update compression (the daemon's --compress, learn/compress.py) ----
        self.compress_spec = parse_compress(cfg.compress)
        self._compressors: dict[int, Compressor] = {}
        self.delta_bytes: dict[bytes, int] = {}   # model hash -> its compressed delta frame's size, no view
        if cfg.eval_samples and cfg.eval_samples < len(ds.y_test):
            idx = np.sort(self.np_rng.permutation(len(ds.y_test))[: cfg.eval_samples])
            self.x_test, self.y_test = ds.x_test[idx], ds.y_test[idx]
        else:
            self.x_test, self.y_test = ds.x_test, ds.y_test
        self._eval_ds = ldata.Dataset(ds.x[:1], ds.y[:1], self.x_test, self.y_test, ds.num_classes,
                                      ds.input_shape)
        self._eval_cache: dict[bytes, tuple[float, float, list[float]]] = {}
        self.attack = attacks.parse_attack(cfg.attack) if cfg.attack != "none" else None
        # rates measured at every evaluation: the configured attack, and eval_attack (baselines)
        self.measured = [attacks.parse_attack(a) for a in cfg.measured_attacks]
        self._poison_data: ldata.Dataset | None = None
        self._poison_cache: dict[bytes, bytes] = {}
        self._pipelines: dict[int, Pipeline] = {}
        self._global_store = None   # history_scope=global: the one store every aggregator shares
        self._probe_cache: dict[tuple[int, bytes], float] = {}
        self._gates: dict[int, AdoptionGate] = {}
        self.fallbacks: Counter[str] = Counter()   # aggregator self-check: unfiltered / current
        self.adopt_rises: list[float] = []   # honest probe-loss rises the adoption check let through
        # ---- network and compute models ----
        n = self.n_total
        lat = draw(cfg.latency, (n, n), self.np_rng)
        self.latency = np.triu(lat, 1) + np.triu(lat, 1).T  # symmetric links, zero to self
        self.bandwidth = np.maximum(draw(cfg.bandwidth, n, self.np_rng), 1.0)
        self.speed = np.maximum(draw(cfg.compute, n, self.np_rng), 1e-6)
        self.up_free = np.zeros(n)
        # ---- accounting ----
        self.bytes_sent = np.zeros(n, dtype=np.int64)
        self.bytes_recv = np.zeros(n, dtype=np.int64)
        self.msg_count: Counter[str] = Counter()
        self.msg_bytes: Counter[str] = Counter()
        self.dropped = 0
        self.series: list[dict[str, Any]] = []
        self.events: Counter[str] = Counter()
        self.models_rejected: Counter[str] = Counter()  # learn.sanity reasons, as the daemon counts them
        self.churn_counts: Counter[str] = Counter()
        self.part_of: dict[int, int] = {}     # during a partition churn step: node -> its part
        self.partitions: list[dict[str, Any]] = []
        self.partition_dropped = 0
        self.trainings = 0
        self.aggregations = 0
        self._next_eval = 0
        self._stop = False
        rounds = cfg.rounds or 0
        self.eval_rounds = max(1, rounds // 25) if rounds else 1
        self.setup()

    # ---- hooks --------------------------------------------------------------------------------
    def extra_nodes(self) -> int:
        return 0

    def setup(self) -> None: ...

    def begin(self) -> None: ...

    def crash(self, i: int) -> None:
        self.alive[i] = False

    def leave(self, i: int) -> None:
        self.crash(i)

    def join(self, i: int) -> None:
        self.alive[i] = True

    def eval_models(self) -> list[bytes]:
        """Hashes of the honest models to evaluate now."""
        raise NotImplementedError

    def rounds_done(self) -> int:
        raise NotImplementedError

    def extra_metrics(self) -> dict[str, Any]:
        return {}

    def referenced(self) -> set[bytes]:
        """Models still needed (for the store's garbage collection)."""
        return set()

    # ---- events -------------------------------------------------------------------------------
    def at(self, t: float, fn: Callable, *args: Any) -> None:
        heapq.heappush(self._q, (t, next(self._seq), fn, args))

    def after(self, dt: float, fn: Callable, *args: Any) -> None:
        self.at(self.now + dt, fn, *args)

    def send(self, src: int, dst: int, size: int, kind: str, deliver: Callable, *args: Any,
             on_fail: Callable | None = None) -> None:
        """Model a transfer: serialised on the sender's uplink at min(up_src, down_dst), then latency."""
        start = max(self.now, self.up_free[src])
        tx = size / min(self.bandwidth[src], self.bandwidth[dst])
        self.up_free[src] = start + tx
        arrive = start + tx + self.latency[src, dst]
        self.bytes_sent[src] += size
        self.msg_count[kind] += 1
        self.msg_bytes[kind] += size
        self.at(arrive, self._deliver, dst, size, deliver, args, src, on_fail)

    def _deliver(self, dst: int, size: int, deliver: Callable, args: tuple, src: int,
                 on_fail: Callable | None) -> None:
        if self.part_of and self.part_of.get(src, -1) != self.part_of.get(dst, -1):
            self.partition_dropped += 1   # a cut drops silently (a firewall DROP: no reset)
            return
        if not self.alive[dst]:
            self.dropped += 1
            if on_fail is not None and self.alive[src]:
                self.after(self.latency[src, dst], on_fail)  # the sender learns it failed (TCP reset)
            return
        self.bytes_recv[dst] += size
        deliver(*args)

    # ---- store ------------------------------------------------------------------------------
    def gc(self) -> None:
        keep = self.referenced() | {self.initial} | set(self._init_of.values())
        for _, _, _, args in self._q:
            _collect_refs(args, keep)
        keep |= {self.parent[h] for h in list(keep) if h in self.parent}
        for h in [h for h in self.models if h not in keep]:
            del self.models[h]
            self.parent.pop(h, None)
        self._poison_cache = {k: v for k, v in self._poison_cache.items() if k in self.models and v in self.models}
        self.delta_bytes = {k: v for k, v in self.delta_bytes.items() if k in self.models}

    # ---- churn --------------------------------------------------------------------------------
    def _schedule_churn(self) -> None:
        for step in self.churn:
            if step.kind == "partition":
                self.at(step.start, self._partition, step.groups, step.every)
                continue
            for k in range(step.times):
                self.at(step.start + k * step.every, self._churn_step, step.kind, step.count)

    def _partition(self, groups: tuple[int, ...], duration: float) -> None:
        """Cut the nodes present (node order) into parts of `groups` sizes, heal after `duration`."""
        present = [i for i in range(self.next_join) if self.alive[i]] + list(self.sybil_ids)
        self.part_of, pos = {}, 0
        for g, size in enumerate(groups):
            last = g == len(groups) - 1
            for i in present[pos: None if last else pos + size]:
                self.part_of[i] = g
            pos += size
        self.partitions.append({"t": round(self.now, 3), "groups": list(groups), "duration": duration,
                                "rounds_at_cut": self.rounds_done(), "part_rounds_at_cut": self.part_rounds()})
        self.churn_counts["partition"] += 1
        self.after(duration, self._heal)

    def part_rounds(self) -> list[int]:
        """Each part's newest round (protocols with a round estimate per node override this)."""
        return []

    def _heal(self) -> None:
        self.partitions[-1]["part_rounds_at_heal"] = self.part_rounds()
        self.part_of = {}
        self.partitions[-1]["healed_at"] = round(self.now, 3)
        self.churn_counts["heal"] += 1

    def _churn_step(self, kind: str, count: int) -> None:
        if kind == "join":
            for _ in range(count):
                i = self.next_join
                self.next_join += 1
                self.alive[i] = True
                self.honest_started.append(i)
                self.churn_counts["join"] += 1
                self.join(i)
            return
        alive = [i for i in range(self.next_join) if self.alive[i]]
        for i in self.rng.sample(alive, min(count, max(len(alive) - 1, 0))):
            self.churn_counts[kind] += 1
            if kind == "crash":
                self.crash(i)
            else:
                self.leave(i)

    # ---- run ----------------------------------------------------------------------------------
    def run(self, progress: ProgressFn | None = None) -> dict[str, Any]:
        wall0 = time.perf_counter()
        self._schedule_churn()
        if self.cfg.eval_every > 0:
            self.at(0.0, self._time_eval)
        self.begin()
        self.maybe_record(0)
        t_end = self.cfg.duration if self.cfg.duration is not None else float("inf")
        n_ev = 0
        last_gc = 0
        models_at_gc = 0
        while self._q and not self._stop:
            t, _, fn, args = self._q[0]
            if t > t_end:
                break
            heapq.heappop(self._q)
            self.now = t
            fn(*args)
            n_ev += 1
            if progress is not None and n_ev % 200 == 0:
                progress(self._fraction(), {"t": self.now, "round": self.rounds_done()})
            if len(self.models) > 4 * models_at_gc + 64 and n_ev - last_gc > 1000:
                self.gc()
                last_gc, models_at_gc = n_ev, len(self.models)
        if self.cfg.duration is not None and not self._stop:
            self.now = max(self.now, t_end) if not self._q or self._q[0][0] > t_end else self.now
        if not self.series or self.series[-1]["t"] != round(self.now, 4):
            self.record()
        if progress is not None:
            progress(1.0, {"t": self.now, "round": self.rounds_done()})
        return self.result(time.perf_counter() - wall0)

    def _fraction(self) -> float:
        fr = []
        if self.cfg.rounds:
            fr.append(self.rounds_done() / self.cfg.rounds)
        if self.cfg.duration:
            fr.append(self.now / self.cfg.duration)
        return min(1.0, max(fr)) if fr else 0.0
