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
from gossipnode.learn.aggregation import Contribution, build_pipeline
from gossipnode.learn.aggregation.pipeline import Pipeline
from gossipnode.learn.compress import Compressor
from gossipnode.learn.compress_names import parse_compress
from gossipnode.core.messages import ModelKind, ModelMsg, RawTensor
from gossipnode.wire.tensors import decode_values, to_raw
from gossipnode.runtime.aggregating import no_recording
from gossipnode.learn.aggregation.filters import NoFilter
from gossipnode.learn.sanity import (DEGENERATE_MODEL, WORSE_MODEL, AdoptionGate, adoption_problem, check_model,
                                     degenerate)
from gossipnode.learn.models import build_model
from gossipnode.learn.state import State, state_from_module, sub
from gossipnode.learn.trainer import Trainer

from .config import SimConfig, draw, parse_churn
from .sizes import SizeModel

ProgressFn = Callable[[float, dict[str, Any]], None]


def pk_of(seed: int, i: int) -> bytes:
    return hashlib.sha256(f"gossipnode-sim/{seed}/{i}".encode()).digest()


def state_hash(state: State) -> bytes:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).data)
    return h.digest()


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


class Engine:
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
        self._datasets: dict[int, ldata.Dataset] = {}
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

    # ---- learning -----------------------------------------------------------------------------
    def put(self, state: State, parent: bytes | None = None) -> bytes:
        h = state_hash(state)
        self.models[h] = state
        if parent is not None:
            self.parent[h] = parent
        return h

    def initial_of(self, i: int) -> bytes:
        if self.cfg.init == "same":
            return self.initial
        h = self._init_of.get(i)
        if h is None:
            h = self.put(state_from_module(self.model_factory(self.cfg.seed * 100_003 + 1 + i)))
            self._init_of[i] = h
        return h

    def dataset_of(self, i: int) -> ldata.Dataset:
        d = self._datasets.get(i)
        if d is None:
            d = self.data.subset(self.shards[i])
            self._datasets[i] = d
        return d

    def train_time(self, i: int) -> float:
        if i in self._sybil_set:
            return 0.1
        return len(self.shards[i]) * self.cfg.local_epochs / self.speed[i]

    @property
    def _sybil_set(self) -> range:
        return range(self.n_honest_cap, self.n_honest_cap + self.n_sybils)

    def train(self, i: int, h: bytes) -> bytes:
        if i in self._sybil_set:
            return self.poisoned(h)
        state, _ = self.trainer.train(self.models[h], self.dataset_of(i))
        self.trainings += 1
        return self.put(state, parent=h)

    def poisoned(self, h: bytes) -> bytes:
        """The attacker host trains once per base model; every Sybil identity sends that same model."""
        out = self._poison_cache.get(h)
        if out is None:
            if self._poison_data is None:
                assert self.attack is not None
                base = self.data
                if self.attack.kind == "backdoor":  # a shard-sized-ish share of the data, triggered
                    take = min(len(base.y), max(200, 4 * len(self.shards[0])))
                    base = base.subset(np.sort(self.np_rng.permutation(len(base.y))[:take]))
                self._poison_data = attacks.poison(base, self.attack, seed=self.cfg.seed)
            state, _ = self.trainer.train(self.models[h], self._poison_data)
            out = self.put(state, parent=h)
            self._poison_cache[h] = out
        return out

    @property
    def compressing(self) -> bool:
        return self.compress_spec.kind != "none"

    def compressor(self, i: int, error_feedback: bool = True) -> Compressor:
        c = self._compressors.get(i)
        if c is None:
            c = Compressor(self.compress_spec, error_feedback)
            self._compressors[i] = c
        return c

    def compress(self, i: int, h: bytes, base_h: bytes, error_feedback: bool = True) -> bytes:
        """Node i sends model h as a compressed delta against base_h, exactly as the daemon does
        (wire/tensors.make_delta with a compressor): returns the hash of the receiver's (and the
        sender's) reconstruction, stored with parent base_h; its frame size is in delta_bytes.
        With error feedback the node's residual (what the compressor dropped) joins its next update."""
        model, base = self.models[h], self.models[base_h]
        floats = {k: v.astype(np.float32) - base[k].astype(np.float32)
                  for k, v in model.items() if np.issubdtype(v.dtype, np.floating)}
        try:
            enc = self.compressor(i, error_feedback).compress(floats)
        except ValueError:   # a diverged (non-finite) update: sent whole, as without compression,
            return h         # and refused by its receivers' sanity check
        recon: State = {}
        wire: list[RawTensor] = []
        for k, v in model.items():
            if k in enc:
                recon[k] = (base[k].astype(np.float32) + decode_values(enc[k])).astype(v.dtype)
                wire.append(enc[k])
            else:   # integer buffers travel whole (SPEC section 7)
                recon[k] = v
                wire.append(to_raw(k, v))
        out = self.put(recon, parent=base_h)
        self.delta_bytes[out] = self.sizes.delta_frame(wire)
        return out

    def msg_size(self, msg: Any) -> int:
        """Frame size of a core's message; a TRAINED model sent compressed costs its encoding."""
        if isinstance(msg, ModelMsg) and msg.kind == ModelKind.TRAINED:
            tb = self.delta_bytes.get(msg.model)
            if tb is not None:
                return self.sizes.compressed_model(msg, tb)
        return self.sizes.of(msg)

    PROBE_SAMPLES = 512   # as the daemon's learner.PROBE_SAMPLES

    def probe_loss(self, i: int, h: bytes) -> float:
        key = (i, h)
        loss = self._probe_cache.get(key)
        if loss is None:
            if len(self._probe_cache) > 20_000:
                self._probe_cache.clear()
            d = self.dataset_of(i)
            idx = np.linspace(0, len(d.y) - 1, min(self.PROBE_SAMPLES, len(d.y))).astype(np.int64)
            loss = self.trainer.probe_loss(self.models[h], d.x[idx], d.y[idx])
            self._probe_cache[key] = loss
        return loss

    def adoption_problem(self, i: int, h: bytes, current: bytes) -> str | None:
        """The daemon's receive-time checks of a round model (SPEC section 15) for honest node i
        holding ``current``: degenerate_model, then the adoption check (worse_model). Every
        honest loss rise that passes is kept in ``adopt_rises`` (what --adopt-margin must allow)."""
        st, cur = self.models.get(h), self.models.get(current)
        if st is None or cur is None or h == current:
            return None
        if degenerate(st, cur) is not None:
            return DEGENERATE_MODEL
        if self.cfg.adopt_margin <= 0:
            return None
        gate = self._gates.get(i)
        if gate is None:
            gate = self._gates[i] = AdoptionGate(self.cfg.adopt_margin)
        new, old = self.probe_loss(i, h), self.probe_loss(i, current)
        if gate.check(new, old) is not None:
            return WORSE_MODEL
        self.adopt_rises.append(new - old)
        return None

    def pipeline(self, i: int) -> Pipeline:
        p = self._pipelines.get(i)
        if p is None:
            params: dict[str, Any] = self.cfg.pipeline_params()
            if self.cfg.filter in ("sybilwall", "foolsgold"):
                params["self_id"] = self.node_name(i)
            p = build_pipeline(self.cfg.filter, self.cfg.combine, self.cfg.correct, **params)
            self._pipelines[i] = p
        return p

    @staticmethod
    def node_name(i: int) -> str:
        return f"n{i}"

    def aggregate(self, i: int, round_: int, contributions: list[tuple[int, bytes]],
                  own: bytes | None = None, beta: float | None = 0.5) -> bytes:
        """Run node i's pipeline. Updates are measured against the most common parent (the round's
        base model), or against ``own`` when merging (gossip, D-PSGD). SybilWall histories
        accumulate these deltas: MoDeST, j's updates vs the round's base; gossip and D-PSGD,
        received model of j - node i's own model (the SybilWall paper's definition)."""
        self.aggregations += 1
        if own is not None:
            base_h = own
        else:
            parents = Counter(self.parent.get(h) for _, h in contributions)
            parents.pop(None, None)
            base_h = parents.most_common(1)[0][0] if parents else None
        base = self.models.get(base_h) if base_h is not None else None
        # The daemon's receive-time sanity check (learn.sanity): finite, and an update of bounded
        # size against its base (merges: against the own model). Models failing it are dropped.
        kept = []
        for j, h in contributions:
            ref_h = own if own is not None else self.parent.get(h)
            bad = check_model(self.models[h], self.models.get(ref_h) if ref_h is not None else None,
                              self.cfg.max_update_norm)
            if bad is None:
                kept.append((j, h))
            else:
                self.models_rejected[bad[0]] += 1
        if not kept and own is None and base is None:
            kept = list(contributions)  # nothing to fall back to; the pipeline drops non-finite ones
        contribs = []
        for j, h in kept:
            m = self.models[h]
            contribs.append(Contribution(self.node_name(j), m, sub(m, base) if base is not None else m, round_))
        res = self.pipeline(i).aggregate(contribs, base, own=self.models[own] if own else None, beta=beta)
        state = res.state
        if own is None and base_h is not None and i < self.n_honest_cap and self.cfg.adopt_margin > 0:
            state = self.self_check(i, state, contribs, base_h, getattr(self, "current", {}).get(i, base_h))
        return self.put(state, parent=base_h if own is None else None)

    def self_check(self, i: int, state: State, contribs: list[Contribution], base_h: bytes,
                   current_h: bytes) -> State:
        """The daemon's aggregator self-check (gossipnode/aggregate.py self_check): a result much
        worse than i's current model on i's own data gives way to the unfiltered pipeline, then
        to the current model."""
        gate = self._gates.get(i) or AdoptionGate(self.cfg.adopt_margin)
        margin = gate.margin
        base_loss = gate.reference(self.probe_loss(i, current_h))
        d = self.dataset_of(i)
        idx = np.linspace(0, len(d.y) - 1, min(self.PROBE_SAMPLES, len(d.y))).astype(np.int64)
        if adoption_problem(self.trainer.probe_loss(state, d.x[idx], d.y[idx]), base_loss, margin) is None:
            return state
        def ok(st: State) -> bool:
            return adoption_problem(self.trainer.probe_loss(st, d.x[idx], d.y[idx]), base_loss, margin) is None

        kept = [c for c in contribs if ok(c.model)]
        if kept:
            p = self.pipeline(i)
            for name, pipe in (("screened", p), ("unfiltered", Pipeline(NoFilter(), p.combiner, p.corrector))):
                with no_recording(pipe):
                    res = pipe.aggregate(kept, self.models[base_h])
                if any(w > 0 for w in res.weights.values()) and ok(res.state):
                    self.fallbacks[name] += 1
                    return res.state
        self.fallbacks["current"] += 1
        return {k: v.copy() for k, v in self.models[current_h].items()}

    def evaluate(self, h: bytes) -> tuple[float, float, list[float]]:
        r = self._eval_cache.get(h)
        if r is None:
            st = self.models[h]
            ev = self.trainer.evaluate(st, self.x_test, self.y_test)
            ar = [attacks.attack_rate(self.trainer, st, self._eval_ds, a) for a in self.measured]
            r = (ev.accuracy, ev.loss, ar)
            self._eval_cache[h] = r
        return r

    # ---- measurement --------------------------------------------------------------------------
    def record(self, round_: int | None = None) -> None:
        hs = self.eval_models()
        res = [self.evaluate(h) for h in hs]
        honest_ids = [i for i in range(self.n_honest_cap) if i < self.next_join]
        alive_honest = int(self.alive[: self.n_honest_cap].sum())
        sent = self.bytes_sent[: self.n_honest_cap][: self.next_join]
        row: dict[str, Any] = {
            "t": round(float(self.now), 4),
            "round": self.rounds_done() if round_ is None else round_,
            "acc_mean": float(np.mean([r[0] for r in res])) if res else None,
            "acc_min": float(np.min([r[0] for r in res])) if res else None,
            "acc_max": float(np.max([r[0] for r in res])) if res else None,
            "loss_mean": float(np.mean([r[1] for r in res])) if res else None,
            # only where an attack is configured (or asked for as a baseline: eval_attack)
            "attack_rate": (float(np.mean([r[2][0] for r in res])) if res and self.measured else None),
            "evaluated": len(res),
            "bytes_total": int(self.bytes_sent.sum()),
            "bytes_per_node": float(sent.mean()) if len(honest_ids) else 0.0,
            "active_nodes": alive_honest,
        }
        if res and len(self.measured) > 1:
            row["attack_rates"] = {a.kind: float(np.mean([r[2][m] for r in res]))
                                   for m, a in enumerate(self.measured)}
        row.update(self.extra_metrics())
        self.series.append(row)
        if self.cfg.stop_at_target and row["acc_mean"] is not None and row["acc_mean"] >= self.cfg.target:
            self._stop = True

    def maybe_record(self, round_: int) -> None:
        """Evaluate every ``eval_rounds`` rounds; stop once ``cfg.rounds`` rounds are done."""
        if self.cfg.eval_every <= 0 and round_ >= self._next_eval:
            self.record(round_)
            self._next_eval = (round_ // self.eval_rounds + 1) * self.eval_rounds
        if self.cfg.rounds is not None and round_ >= self.cfg.rounds and not self._stop:
            if self.series[-1]["round"] != round_:
                self.record(round_)
            self._stop = True

    def _time_eval(self) -> None:
        self.record()
        self.after(self.cfg.eval_every, self._time_eval)

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

    def result(self, wall: float) -> dict[str, Any]:
        target = self.cfg.target
        hit = next((r for r in self.series if r["acc_mean"] is not None and r["acc_mean"] >= target), None)
        started = self.next_join
        sent = self.bytes_sent[:started]
        final = self.series[-1] if self.series else {}
        summary = {
            "protocol": self.name,
            "virtual_time_s": round(self.now, 3),
            "wall_s": round(wall, 2),
            "rounds_completed": self.rounds_done(),
            "final_acc_mean": final.get("acc_mean"),
            "final_acc_min": final.get("acc_min"),
            "final_attack_rate": final.get("attack_rate"),
            "best_acc_mean": max((r["acc_mean"] for r in self.series if r["acc_mean"] is not None),
                                 default=None),
            "target": target,
            "time_to_target_s": hit["t"] if hit else None,
            "round_to_target": hit["round"] if hit else None,
            "bytes_to_target": hit["bytes_total"] if hit else None,
            "bytes_total": int(self.bytes_sent.sum()),
            "bytes_per_honest_node_mean": float(sent.mean()) if started else 0.0,
            "bytes_per_honest_node_max": int(sent.max()) if started else 0,
            "messages": dict(self.msg_count),
            "message_bytes": dict(self.msg_bytes),
            "messages_dropped": self.dropped,
            "trainings": self.trainings,
            "aggregations": self.aggregations,
            "model_bytes": self.sizes.model_bytes,
            "compress": str(self.compress_spec),
            "churn_events": dict(self.churn_counts),
            **({"partitions": self.partitions, "partition_dropped": self.partition_dropped}
               if self.partitions else {}),
            "protocol_events": dict(self.events),
            "models_rejected": dict(self.models_rejected),
            "aggregation_fallbacks": dict(self.fallbacks),
            # honest round models' loss rise on the receiver's data, over all adoption checks
            "adopt_rise": ({"checks": len(self.adopt_rises),
                            "p99": float(np.quantile(self.adopt_rises, 0.99)),
                            "max": float(max(self.adopt_rises))} if self.adopt_rises else None),
            "sybils": self.n_sybils,
            # weight tensors the default correction (vc) rescaled, over all nodes' merges
            "vc_corrected": sum(getattr(p.corrector, "corrected", 0) for p in self._pipelines.values()),
            "active_nodes_end": int(self.alive[: self.n_honest_cap].sum()),
        }
        return {"config": self.cfg.to_dict(), "summary": summary, "series": self.series}
