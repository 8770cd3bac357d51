"""What the daemon's model exchange does, in the simulator: each node holds what the daemon's
store would hold (the daemon's own `runtime.store.ModelStore`: LRU and pins, models by hash),
fetches the base of a TRAINED delta it lacks from the sender (MODEL_REQUEST / MODEL_DATA), and
piggy-backs SybilWall histories on model messages (the daemon's `runtime.histories.HistoryGossip`).

A mixin of the MoDeST and gossip simulators (it uses their `pks`, `index_of`, `cores`, `drivers`,
`tick_at`); it also keeps their timers (one pending wake per node for the shared ActionDriver).
Not modelled: the daemon's request rate limit and its bound on frames waiting for a base (no
node here floods requests)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from gossipnode.core.messages import ModelData, ModelKind, ModelMsg, ModelRequest, message_type
from gossipnode.learn.state import flatten
from gossipnode.runtime.histories import HistoryGossip
from gossipnode.runtime.store import ModelStore
from gossipnode.wire.tensors import to_raw

HELD = (to_raw("held", np.zeros(1, np.float32)),)   # stands for a model's tensors (sizes come from SizeModel)


class SimExchange:
    def _init_exchange(self) -> None:
        self.stores: dict[int, ModelStore] = {}
        self.hgossip: dict[int, HistoryGossip | None] = {}
        self._waiting: dict[tuple[int, bytes], list[tuple[int, ModelMsg, Callable]]] = {}
        self._history_size: int | None = None

    # ---- timers: one pending wake per node, the earliest (the driver asks for it) -----------
    def wake_at(self, i: int, t: float) -> None:
        cur = self.tick_at.get(i)
        if cur is not None and cur <= t:
            return
        self.tick_at[i] = t
        self.at(t, self._tick, i, t)

    def _tick(self, i: int, d: float) -> None:
        if self.tick_at.get(i) != d:
            return
        del self.tick_at[i]
        if self.alive[i]:
            self.drivers[i].tick()

    # ---- what a node holds ----------------------------------------------------------------
    def store_of(self, i: int) -> ModelStore:
        s = self.stores.get(i)
        if s is None:
            s = self.stores[i] = ModelStore()
        return s

    def hold(self, i: int, h: bytes, pin: bool = False) -> None:
        s = self.store_of(i)
        s.put((), h)
        if pin:
            s.pin(h)

    def adopt_held(self, i: int, old: bytes | None, new: bytes) -> None:
        s = self.store_of(i)
        if old is not None:
            s.unpin(old)
        self.hold(i, new, pin=True)

    # ---- SybilWall history gossip -----------------------------------------------------------
    def histories_of(self, i: int) -> HistoryGossip | None:
        if i not in self.hgossip:
            p = self.pipeline(i)
            hg = None
            if getattr(p.filter, "use_gossip", False) and (self.cfg.history_records > 0 or self.cfg.history_sketch):
                if self._history_size is None:
                    self._history_size = int(flatten(self.models[self.initial]).size)
                hg = HistoryGossip(p, self.node_name(i), self.cfg.history_records, self.cfg.history_dtype,
                                   self._history_size, self.cfg.seed * 7919 + i,
                                   name_of=lambda pk: self.node_name(self.index_of[pk]))
                hg.pk_of.update((self.node_name(j), pk) for j, pk in enumerate(self.pks))
            self.hgossip[i] = hg
        return self.hgossip[i]

    def outgoing(self, i: int, peer: bytes, msg: object) -> object:
        """A model message as node i sends it: with the history records it piggy-backs."""
        if isinstance(msg, ModelMsg) and (hg := self.histories_of(i)) is not None:
            msg = hg.attach(msg, peer)
        return msg

    # ---- receiving a model --------------------------------------------------------------------
    def incoming(self, j: int, i: int, msg: ModelMsg, accept: Callable[[int, int, ModelMsg], None]) -> None:
        """Node j receives `msg` from i: its base fetched first if j lacks it (after the role
        checks: no fetch for a stranger's model), then `accept(j, i, msg)`."""
        base = self.parent.get(msg.model) if msg.kind == ModelKind.TRAINED else None
        if base is None or base in self.store_of(j):
            accept(j, i, msg)
            return
        if self.cores[j].admissible(self.pks[i], msg) is not None:
            self.drivers[j].handle(self.pks[i], replace(msg, histories=(), sketches=None))   # the core rejects it
            return
        key = (j, base)
        first = key not in self._waiting
        self._waiting.setdefault(key, []).append((i, msg, accept))
        if first:
            req = ModelRequest(base)
            self.send(j, i, self.sizes.of(req), message_type(req), self._on_request, i, j, req)
            # as the daemon's fetch time-out: two ping time-outs (plus the transfer, modelled by send)
            self.after(2 * self.cfg.ping_timeout + self.sizes.model_data / float(self.bandwidth[j]),
                       self._fetch_timeout, key)

    def _on_request(self, i: int, j: int, req: ModelRequest) -> None:
        """Node i answers j's MODEL_REQUEST with the model if it holds it (else an empty answer)."""
        if not self.alive[i]:
            return
        held = req.model in self.store_of(i) or i in self._sybil_set
        data = ModelData(req.model, HELD if held else ())
        self.send(i, j, self.sizes.of(data), message_type(data), self._on_data, j, i, data)

    def _on_data(self, j: int, i: int, data: ModelData) -> None:
        waiting = self._waiting.pop((j, data.model), [])
        if not waiting:
            self.models_rejected["unsolicited_model"] += 1
            return
        if not data.tensors:
            self.models_rejected["missing_base"] += len(waiting)
            return
        self.hold(j, data.model)
        for sender, msg, accept in waiting:
            accept(j, sender, msg)

    def _fetch_timeout(self, key: tuple[int, bytes]) -> None:
        waiting = self._waiting.pop(key, None)
        if waiting:
            self.models_rejected["missing_base"] += len(waiting)

    def take_histories(self, j: int, i: int, msg: ModelMsg) -> ModelMsg | None:
        """Node j merges the histories on i's model message (None: bad_history, the message is refused)."""
        if msg.histories or msg.sketches:
            hg = self.histories_of(j)
            if hg is not None and (hg.merge(self.pks[i], msg.histories) is not None or (
                    msg.sketches and hg.merge_table(self.pks[i], msg) is not None)):
                self.models_rejected["bad_history"] += 1
                return None
            msg = replace(msg, histories=(), sketches=None)
        return msg
