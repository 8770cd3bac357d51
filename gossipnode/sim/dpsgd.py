"""D-PSGD baseline: every node trains, sends its model to its neighbours and averages what it got.

Topologies: ``exp`` (one-peer exponential graph: in round r node i sends to i + 2^(r mod L) and
receives from i - 2^(r mod L)), ``ring`` (both neighbours, every round), ``regular:K`` (a
seeded random K-regular-ish graph) and ``rgg:R:D`` (the SybilWall paper's random geometric
graph, sim/topology.py). Averaging runs through the pipeline with the own model as one more
input (``beta=None``), so filters (SybilWall, Krum, ...) apply per node. Sybil identities are
attached to ``sybil_links`` honest nodes each (on ``rgg``: the nearest ones, else random ones)
and send the attacker's one poisoned model.
With the ``sybilwall`` filter nodes also gossip one update history per neighbour per round (the
paper's rule; with ``history_sketch`` > 0 the histories are count-sketches, SPEC §15.2).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import parse_topology
from .topology import nearest_links, rgg
from .engine import Engine


class DPSGDSim(Engine):
    name = "dpsgd"

    def setup(self) -> None:
        if self.n_joins:
            raise ValueError("dpsgd: joins are not supported (fixed topology); use crash/leave churn")
        self.topo, k, radius = parse_topology(self.cfg.topology)
        n = self.cfg.nodes
        self.L = max(1, math.ceil(math.log2(n))) if n > 1 else 1
        self.nbrs: list[list[int]] = [[] for _ in range(n)]
        if self.topo == "ring":
            self.nbrs = [sorted({(i - 1) % n, (i + 1) % n} - {i}) for i in range(n)]
        elif self.topo == "regular":
            adj: list[set[int]] = [set() for _ in range(n)]
            for _ in range(max(1, k // 2)):  # union of random perfect-matching-like rings
                perm = self.np_rng.permutation(n)
                for a, b in zip(perm, np.roll(perm, 1), strict=True):
                    if a != b:
                        adj[a].add(int(b))
                        adj[b].add(int(a))
            self.nbrs = [sorted(s) for s in adj]
        elif self.topo == "rgg":
            self.nbrs, pos = rgg(n, radius, k, self.np_rng)
        self.model = [self.initial_of(i) for i in range(n)]
        self.round = [0] * n
        self.inbox: list[dict[int, dict[int, bytes]]] = [{} for _ in range(n)]
        self.trained = [False] * n
        self.sybils_of: list[list[int]] = [[] for _ in range(n)]
        if self.topo == "rgg":   # as in the paper: each Sybil next to the honest nodes nearest to it
            links = nearest_links(pos, len(self.sybil_ids), self.cfg.sybil_links, self.np_rng)
        else:
            links = [self.rng.sample(range(n), min(self.cfg.sybil_links, n)) for _ in self.sybil_ids]
        for s, honest in zip(self.sybil_ids, links, strict=True):
            for i in honest:
                self.sybils_of[i].append(s)
        self.attacker: dict[int, bytes] = {}
        subset = list(range(n))
        self.rng.shuffle(subset)
        self.eval_ids = sorted(subset[: self.cfg.eval_nodes])
        self.min_round = 0
        self.gossip_histories = self.cfg.filter == "sybilwall"
        self.link_ref: dict[tuple[int, int], bytes] = {}   # (i, j): j's copy of i's model (--compress)

    def out_nbrs(self, i: int, r: int) -> list[int]:
        if self.topo == "exp":
            return [(i + 2 ** (r % self.L)) % self.cfg.nodes]
        return self.nbrs[i]

    def in_nbrs(self, i: int, r: int) -> list[int]:
        if self.topo == "exp":
            return [(i - 2 ** (r % self.L)) % self.cfg.nodes]
        return self.nbrs[i]

    def begin(self) -> None:
        for i in range(self.cfg.nodes):
            self._start_round(i)

    def _start_round(self, i: int) -> None:
        r = self.round[i]
        self.trained[i] = False
        self.after(self.train_time(i), self._trained, i, r)

    def _trained(self, i: int, r: int) -> None:
        if not self.alive[i]:
            return
        self.model[i] = self.train(i, self.model[i])
        self.trained[i] = True
        for j in self.out_nbrs(i, r):
            if j != i:
                h, size = self._link_model(i, j)
                self.send(i, j, size, "model", self._recv, j, i, r, h)
        self.after(self.cfg.dpsgd_timeout, self._timeout, i, r)
        self._check(i, r)

    def _link_model(self, i: int, j: int) -> tuple[bytes, int]:
        """What node i sends to j, and its size. Uncompressed: the whole model. Compressed: a delta
        against j's copy of i's model (the reconstruction of what i last sent j; at first the shared
        initial model): CHOCO-SGD's public copies, without its consensus step; j averages with the
        updated copy. What the compressor
        dropped stays in the next (model - copy), so this link's error feedback is its base: the
        compressor keeps no residual of its own (error_feedback=False)."""
        if not self.compressing:
            return self.model[i], self.sizes.full_model
        ref = self.link_ref.get((i, j), self.initial if self.cfg.init == "same" else None)
        if ref is None or ref not in self.models:
            self.link_ref[(i, j)] = self.model[i]
            return self.model[i], self.sizes.full_model
        h = self.compress(i, self.model[i], ref, error_feedback=False)
        if h not in self.delta_bytes:   # not compressible (non-finite): sent whole
            return h, self.sizes.full_model
        self.link_ref[(i, j)] = h
        return h, self.delta_bytes[h]

    def _recv(self, j: int, i: int, r: int, h: bytes) -> None:
        if r < self.round[j]:
            return
        self.inbox[j].setdefault(r, {})[i] = h
        self._check(j, r)

    def _check(self, i: int, r: int) -> None:
        if self.round[i] != r or not self.trained[i]:
            return
        need = {j for j in self.in_nbrs(i, r) if j != i}
        if need <= set(self.inbox[i].get(r, {})):
            self._average(i, r)

    def _timeout(self, i: int, r: int) -> None:
        if self.alive[i] and self.round[i] == r and self.trained[i]:
            self.events["dpsgd_timeout"] += 1
            self._average(i, r)

    def _attacker_model(self, r: int, ref: bytes) -> bytes:
        h = self.attacker.get(r)
        if h is None:
            h = self.poisoned(ref)
            self.attacker = {r: h}
        return h

    def _average(self, i: int, r: int) -> None:
        got = self.inbox[i].pop(r, {})
        contribs = sorted(got.items())
        if self.sybils_of[i]:
            bad = self._attacker_model(r, self.model[i])
            for s in self.sybils_of[i]:
                self.bytes_sent[s] += self.sizes.full_model
                self.msg_count["model_sybil"] += 1
                self.msg_bytes["model_sybil"] += self.sizes.full_model
                contribs.append((s, bad))
        self.trained[i] = False
        self.round[i] = r + 1
        if contribs:  # deltas (and SybilWall histories): received - own (trained) model
            self.model[i] = self.aggregate(i, r, contribs, own=self.model[i], beta=None)
        if self.gossip_histories:
            self._gossip_histories(i, r)
        for old in [k for k in self.inbox[i] if k <= r]:
            del self.inbox[i][old]
        m = min((self.round[j] for j in range(self.cfg.nodes) if self.alive[j]), default=0)
        if m > self.min_round:
            self.min_round = m
            self.maybe_record(m)
        self.after(self.cfg.agg_time * max(1, len(contribs)), self._start_round, i)

    def _gossip_histories(self, i: int, r: int) -> None:
        store = self.pipeline(i).filter.store
        names = {self.node_name(j): j for j in set(self.out_nbrs(i, r)) | set(self.in_nbrs(i, r)) if j != i}
        picks = store.select_records(list(names), self.node_name(i), self.np_rng)
        # a message of one history: a whole model's size, or an empty frame + one sketch row
        size = self.sizes.full_model if not store.sketch_dims else self.sizes.model_empty + 2 * store.sketch_dims + 40
        for name, (peer, rec) in picks.items():
            j = names[name]
            self.send(i, j, size, "history", self._recv_history, j, i, peer, rec)

    def _recv_history(self, j: int, i: int, peer: str, rec) -> None:
        self.pipeline(j).filter.store.merge_record(peer, rec.round, rec.distance, rec.history,
                                                   received_from=self.node_name(i))

    def crash(self, i: int) -> None:
        self.alive[i] = False

    def rounds_done(self) -> int:
        return self.min_round

    def eval_models(self) -> list[bytes]:
        ids = [i for i in self.eval_ids if self.alive[i]] or [i for i in range(self.cfg.nodes) if self.alive[i]]
        return [self.model[i] for i in ids]

    def referenced(self) -> set[bytes]:
        keep = set(self.model) | set(self.attacker.values()) | set(self.link_ref.values())
        for box in self.inbox:
            for d in box.values():
                keep.update(d.values())
        return keep

    def extra_metrics(self) -> dict[str, Any]:
        return {}
