"""SybilWall history gossip (ALGORITHMS.md section 2): records picked for each model message
that goes out, and records that come in validated and merged into the filter's store. With
sketches (`--history-sketch D`) every model message carries the sender's whole sketch table
instead (SPEC §15.2), so that histories follow identities from aggregator to aggregator."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from dataclasses import replace

from gossipnode.core.messages import HistoryRecord, ModelKind, ModelMsg, SketchTable
from gossipnode.learn.aggregation.sketch import sketch
from gossipnode.wire.identity import node_id
from gossipnode.wire.bodies import MAX_SKETCH_ENTRIES
from gossipnode.wire.tensors import ENCODED_DTYPES, from_raw, to_raw


MAX_NAMES = 1 << 16   # peers whose key this node remembers for its history records and tables


class HistoryGossip:
    def __init__(self, pipeline: Any, self_id: str, records: int, dtype: str, history_size: int,
                 seed: int, name_of: Callable[[bytes], str] = node_id,
                 is_member: Callable[[bytes], bool] | None = None) -> None:
        """`name_of`: a peer's name in the filter's history store (the daemon: its node id; the
        simulator, which runs this same class, its own names). `is_member`: whether a key is a
        member of this node's view (sketch entries about anyone else are skipped: a member could
        otherwise fill the bounded store with made-up identities and evict the real ones)."""
        f = pipeline.filter
        self.store = getattr(f, "store", None) if getattr(f, "use_gossip", False) else None
        self.self_id = self_id
        self.records = records
        self.dtype = np.float16 if dtype == "f2" else np.float32
        self.history_size = history_size
        self.rng = np.random.default_rng(seed)
        self.name_of = name_of
        self.pk_of: dict[str, bytes] = {}   # name -> public key, of every peer heard of
        self.bytes_sent = 0   # history bytes in model messages delivered (counted by the node)
        self.sketch_dims = getattr(self.store, "sketch_dims", 0)
        self.is_member = is_member
        self.entries_skipped = 0   # sketch entries above their message's round or about non-members
        self._table: tuple[int, SketchTable | None] = (-1, None)

    def attach(self, msg: ModelMsg, pk: bytes) -> ModelMsg:
        """`msg` as it goes to `pk`: with the sketch table, or with records picked for `pk`."""
        if self.sketch_dims:
            return replace(msg, sketches=self.table())
        return replace(msg, histories=self.select(pk))

    @staticmethod
    def bytes_of(msg: ModelMsg) -> int:
        t = msg.sketches
        return sum(len(x.data) for h in msg.histories for x in h.tensors) + (
            0 if t is None else len(t.sketches.data) + 40 * len(t.peers))

    def table(self) -> SketchTable | None:
        """The store's sketch table, encoded once per store version."""
        store = self.store
        if store is None or len(store) == 0:
            return None
        if self._table[0] != store.version:
            rows = [(self.pk_of[j], r) for j, r in store.table(MAX_SKETCH_ENTRIES) if j in self.pk_of]
            if not rows:
                return None
            lim = float(np.finfo(self.dtype).max)
            data = np.clip(np.stack([r.history for _, r in rows]), -lim, lim).astype(self.dtype)
            t = SketchTable(tuple(pk for pk, _ in rows), tuple(r.round for _, r in rows), to_raw("sketches", data))
            self._table = (store.version, t)
        return self._table[1]

    def merge_table(self, sender: bytes, msg: ModelMsg) -> str | None:
        """Validate msg's sketch table and offer its entries to the store; a reason if unusable."""
        store, t = self.store, msg.sketches
        # MoDeST rounds are one clock: no entry can be newer than its message (gossip: a model's age)
        bound = None if msg.kind == ModelKind.GOSSIP else msg.round
        if store is None or not self.sketch_dims or t is None:
            return None   # this node keeps no sketches: the table is ignored, not refused
        if t.sketches.dtype in ENCODED_DTYPES or len(t.peers) != len(t.rounds):
            return "a sketch table needs one array tensor and a round per peer"
        v = from_raw(t.sketches)
        if v.ndim != 2 or v.shape != (len(t.peers), self.sketch_dims) or v.dtype.kind != "f":
            return f"sketch table of shape {v.shape}, expected ({len(t.peers)}, {self.sketch_dims})"
        v = v.astype(np.float32)
        if not np.isfinite(v).all():
            return "sketch table has non-finite values"
        if len(set(t.peers)) != len(t.peers):
            return "a sketch table names a peer twice"
        src = self.name_of(sender)
        for pk, rnd, row in zip(t.peers, t.rounds, v, strict=True):
            name = self.name_of(pk)
            # nobody aggregated a round that has not happened; strangers' entries are not kept
            if (bound is not None and rnd > bound) or (
                    self.is_member is not None and name != self.self_id and not self.is_member(pk)):
                self.entries_skipped += 1
                continue
            self.heard(pk)
            store.offer(name, rnd, row, src)
        return None

    def heard(self, pk: bytes) -> None:
        if len(self.pk_of) < MAX_NAMES:   # any signed frame gets here: the map is bounded
            self.pk_of.setdefault(self.name_of(pk), pk)

    def select(self, pk: bytes) -> tuple[HistoryRecord, ...]:
        """The records to piggy-back on a model message to `pk`."""
        store = self.store
        if store is None or self.records < 1 or len(store) == 0:
            return ()
        picked: dict[str, Any] = {}
        for _ in range(self.records):
            for j, rec in store.select_records([self.name_of(pk)], self.self_id, self.rng).values():
                if j in self.pk_of:
                    picked[j] = rec
        lim = float(np.finfo(self.dtype).max)
        return tuple(
            HistoryRecord(self.pk_of[j], rec.round, rec.distance,
                          (to_raw("history", np.clip(rec.history, -lim, lim).astype(self.dtype)),))
            for j, rec in picked.items())

    def merge(self, sender: bytes, records: tuple[HistoryRecord, ...]) -> str | None:
        """Validate and store gossiped histories; a reason string if any is unusable (nothing stored)."""
        store = self.store
        if store is None:
            return None
        vecs = []
        for r in records:
            if len(r.tensors) != 1 or r.distance < 1 or r.tensors[0].dtype in ENCODED_DTYPES:
                return "a history record must hold one array tensor and distance >= 1"
            v = from_raw(r.tensors[0])
            if v.ndim != 1 or v.size != self.history_size or v.dtype.kind != "f":
                return f"history of shape {v.shape}, expected ({self.history_size},)"
            v = v.astype(np.float32)
            if not np.isfinite(v).all():
                return "history has non-finite values"
            vecs.append(v)
        src = self.name_of(sender)
        for r, v in zip(records, vecs, strict=True):
            self.heard(r.peer)
            if self.sketch_dims:   # from a node that sends records: offered as a sketch entry
                store.offer(self.name_of(r.peer), r.round, sketch(v, self.sketch_dims), src)
            else:
                store.merge_record(self.name_of(r.peer), r.round, r.distance, v, src)
        return None
