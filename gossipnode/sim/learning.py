"""The simulator's learning, mixed into `Engine`: the shared model store, training (honest and
the attacker host's), compression, the daemon's receive-time checks and adoption check, and
aggregation through the daemon's pipeline and rules (learn/aggregation/rounds.py)."""
from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import numpy as np

from gossipnode.core.messages import ModelKind, ModelMsg, RawTensor
from gossipnode.learn import attacks
from gossipnode.learn import data as ldata
from gossipnode.learn.aggregation import Contribution, build_pipeline
from gossipnode.learn.aggregation.pipeline import Pipeline
from gossipnode.learn.aggregation.rounds import pick_base, self_check, unfit_bases
from gossipnode.learn.compress import Compressor
from gossipnode.learn.sanity import (DEGENERATE_MODEL, WORSE_MODEL, AdoptionGate, check_model, degenerate,
                                     probe_split)
from gossipnode.learn.state import State, sub
from gossipnode.learn.state import state_from_module  # noqa: F401  (used by subclasses' set-up)
from gossipnode.wire.tensors import decode_values, to_raw


def state_hash(state: State) -> bytes:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).data)
    return h.digest()



class Learning:
    """Learning methods of the engine (state lives on the Engine: see Engine.__init__)."""

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
        """What node i trains on: its shard less the samples held out for the adoption check
        (learn.sanity.probe_split, as the daemon's learner)."""
        return self._parts_of(i)[0]

    def probe_set_of(self, i: int) -> ldata.Dataset:
        return self._parts_of(i)[1]

    def _parts_of(self, i: int) -> tuple[ldata.Dataset, ldata.Dataset]:
        d = self._datasets.get(i)
        if d is None:
            shard = np.asarray(self.shards[i])
            train_idx, probe_idx = probe_split(len(shard))
            d = self._datasets[i] = (self.data.subset(shard[train_idx]), self.data.subset(shard[probe_idx]))
        return d

    def train_time(self, i: int) -> float:
        if i in self._sybil_set:
            return 0.1
        # the whole shard: training on the part kept plus the adoption check's probes of the rest
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

    def probe_loss(self, i: int, h: bytes) -> float:
        key = (i, h)
        loss = self._probe_cache.get(key)
        if loss is None:
            if len(self._probe_cache) > 20_000:
                self._probe_cache.clear()
            d = self.probe_set_of(i)
            loss = self.trainer.probe_loss(self.models[h], d.x, d.y)
            self._probe_cache[key] = loss
        return loss

    def gate_of(self, i: int) -> AdoptionGate:
        """Node i's adoption check, its margin widened by the skew of i's labels (as the daemon)."""
        gate = self._gates.get(i)
        if gate is None:
            labels = self.data.y[np.asarray(self.shards[i], dtype=np.int64)]
            gate = self._gates[i] = AdoptionGate.for_labels(self.cfg.adopt_margin, labels, self.data.num_classes)
        return gate

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
        gate = self.gate_of(i)
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
            if self.cfg.history_scope == "global" and hasattr(p.filter, "store"):
                if self._global_store is None:      # the first node's store becomes everyone's
                    self._global_store = p.filter.store
                p.filter.store = self._global_store
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
            contributions = self.fit_bases(i, contributions)
            if not contributions:   # every update was built on a model i would refuse: no progress
                self.fallbacks["current"] += 1
                return self.current[i]
            parents = Counter(self.parent.get(h) for _, h in contributions)
            parents.pop(None, None)
            base_h = pick_base(parents)   # the daemon's rule (nodes here adopt only honest bases)
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

    def fit_bases(self, i: int, contributions: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """The daemon's `unfit_base` rule (runtime/aggregating.py): honest node i drops the updates
        trained from a model it does not hold and would refuse (a malicious aggregator's model
        that its Sybils went on from). With nothing left, node i sends its current model again."""
        current = getattr(self, "current", {}).get(i)
        if i >= self.n_honest_cap or self.cfg.adopt_margin <= 0 or current not in self.models:
            return contributions
        parents = {p for _, h in contributions if (p := self.parent.get(h)) is not None}
        bad = unfit_bases(parents, (current,), lambda p: p if p in self.models else None,   # by hash: cached probes
                          lambda h: self.probe_loss(i, h), self.gate_of(i), current)
        if not bad:
            return contributions
        self.models_rejected["unfit_base"] += sum(1 for _, h in contributions if self.parent.get(h) in bad)
        return [(j, h) for j, h in contributions if self.parent.get(h) not in bad]

    def self_check(self, i: int, state: State, contribs: list[Contribution], base_h: bytes,
                   current_h: bytes) -> State:
        """The daemon's aggregator self-check (learn/aggregation/rounds.py, the same function):
        a result much worse than i's current model on i's own data gives way to the screened,
        then the unfiltered pipeline, then to the current model."""
        gate = self.gate_of(i)
        d = self.probe_set_of(i)
        x, y = d.x, d.y
        out, info = self_check(self.pipeline(i), lambda st: self.trainer.probe_loss(st, x, y), gate, state,
                               contribs, self.models[base_h], self.models[current_h])
        if "fallback" in info:
            self.fallbacks[info["fallback"]] += 1
        return out

    def evaluate(self, h: bytes) -> tuple[float, float, list[float]]:
        r = self._eval_cache.get(h)
        if r is None:
            st = self.models[h]
            ev = self.trainer.evaluate(st, self.x_test, self.y_test)
            ar = [attacks.attack_rate(self.trainer, st, self._eval_ds, a) for a in self.measured]
            r = (ev.accuracy, ev.loss, ar)
            self._eval_cache[h] = r
        return r

