"""Message sizes for byte accounting, measured once with the real codec instead of encoding every message.

Frame size = the encoded size of the message without tensors and view (measured per message type)
+ one measured per-record size per view record + the model's tensors (measured once with the
real model, so dtype/shape headers are included).
"""
from __future__ import annotations

import numpy as np

from gossipnode.core.messages import (
    Advertise,
    HistoryRecord,
    ModelData,
    ModelKind,
    ModelMsg,
    ModelRequest,
    Ping,
    Pong,
    SketchTable,
    Status,
    ViewRecord,
    ViewShare,
)
from gossipnode.learn.state import State, flatten
from gossipnode.learn.learner import to_model
from gossipnode.wire.codec import encode
from gossipnode.wire.identity import Identity
from gossipnode.wire.tensors import to_raw


class SizeModel:
    def __init__(self, state: State, address_len: int = 12) -> None:
        ident = Identity.from_seed(b"\x01" * 32)
        addr = ("mem://" + "0" * (address_len - 6),)
        rnd, seq, ts = 1000, 1 << 20, 1.7e9   # realistic integer widths

        def size(msg) -> int:
            return len(encode(ident, "gossipnode", seq, ts, msg))

        pk = b"\x02" * 32
        sig = b"\x04" * 64   # every record carries its peer's 64-byte signature
        rec = ViewRecord(pk, rnd, 3, Status.JOIN, addr, sig)
        model = to_model(state)
        self.model_bytes = sum(len(t.data) for t in model)
        own = ViewRecord(ident.public_key, rnd, 3, Status.JOIN, addr, sig)
        self.ping = size(Ping(rnd, 123456, own))
        self.pong = size(Pong(rnd, 123456, own))
        self.advertise = size(Advertise(rnd, 3, Status.JOIN, addr, sig))
        view0 = size(ViewShare(rnd, ()))
        self.view_record = size(ViewShare(rnd, (rec, rec))) - size(ViewShare(rnd, (rec,)))
        self.viewshare_base = view0
        h = b"\x03" * 32
        empty = size(ModelMsg(rnd, ModelKind.TRAINED, h, ()))
        full = size(ModelMsg(rnd, ModelKind.AGGREGATED, h, (), None, model))
        delta = size(ModelMsg(rnd, ModelKind.TRAINED, h, (), h, model))
        self.model_empty = empty
        self.full_model = full        # frame with the whole model, no view
        self.delta_model = delta      # frame with a delta (base hash set), no view
        self.model_request = size(ModelRequest(h))
        self.model_data = size(ModelData(h, model))     # a base fetched whole
        # one piggy-backed SybilWall history record, by dtype (the history of one peer: one weight vector)
        n = int(flatten(state).size)
        self.history_record = {
            dt: size(ModelMsg(rnd, ModelKind.TRAINED, h, (), h, model, (
                HistoryRecord(pk, rnd, 2, (to_raw("history", np.zeros(n, dtype=dt)),)),))) - delta
            for dt in ("<f2", "<f4")}
        # a sketch table: a fixed part plus one row per peer, by dtype and dims (exact for 1 and 2 rows)
        def table(rows: int, dt: str, d: int) -> int:
            t = SketchTable((pk,) * rows, (rnd,) * rows, to_raw("sketches", np.zeros((rows, d), dtype=dt)))
            return size(ModelMsg(rnd, ModelKind.TRAINED, h, (), h, model, (), t)) - delta
        self._table_cost = {}
        self._table_of = table
        self._size = size
        self._h = h

    def delta_frame(self, tensors) -> int:
        """Exact size of a TRAINED frame with these (compressed) delta tensors and no view: encoded
        once per compressed update by the real codec (one signature, one hash of a small body)."""
        return self._size(ModelMsg(1000, ModelKind.TRAINED, self._h, (), self._h, tuple(tensors)))

    def compressed_model(self, msg: object, frame_bytes: int) -> int:
        """A MODEL frame with its view, whose frame without the view is `frame_bytes`."""
        return frame_bytes + self.view_record * len(msg.view) + self.histories(msg)

    def histories(self, msg: ModelMsg) -> int:
        n = sum(self.history_record.get(r.tensors[0].dtype, 0) for r in msg.histories if r.tensors)
        t = msg.sketches
        if t is not None and t.peers:
            key = (t.sketches.dtype, t.sketches.shape[1])
            if key not in self._table_cost:
                one, two = self._table_of(1, *key), self._table_of(2, *key)
                self._table_cost[key] = (one - (two - one), two - one)
            fixed, row = self._table_cost[key]
            n += fixed + row * len(t.peers)
        return n

    def of(self, msg: object, with_tensors: bool = True) -> int:
        if isinstance(msg, Ping):
            return self.ping
        if isinstance(msg, Pong):
            return self.pong
        if isinstance(msg, Advertise):
            return self.advertise
        if isinstance(msg, ViewShare):
            return self.viewshare_base + self.view_record * len(msg.view)
        if isinstance(msg, ModelMsg):
            base = self.model_empty
            if with_tensors:
                base = self.delta_model if msg.kind == ModelKind.TRAINED else self.full_model
            return base + self.view_record * len(msg.view) + self.histories(msg)
        if isinstance(msg, ModelRequest):
            return self.model_request
        if isinstance(msg, ModelData):
            return self.model_data if msg.tensors else self.model_request
        raise TypeError(f"no size for {type(msg).__name__}")
