"""SybilWall history gossip (ALGORITHMS.md section 2): records picked for each model message
that goes out, and records that come in validated and merged into the filter's store."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from gossipnode.core.messages import HistoryRecord
from gossipnode.wire.identity import node_id
from gossipnode.wire.tensors import ENCODED_DTYPES, from_raw, to_raw


class HistoryGossip:
    def __init__(self, pipeline: Any, self_id: str, records: int, dtype: str, history_size: int,
                 seed: int, name_of: Callable[[bytes], str] = node_id) -> None:
        """`name_of`: a peer's name in the filter's history store (the daemon: its node id; the
        simulator, which runs this same class, its own names)."""
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

    def heard(self, pk: bytes) -> None:
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
            store.merge_record(self.name_of(r.peer), r.round, r.distance, v, src)
        return None
