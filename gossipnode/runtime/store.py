"""Content-addressed model store: models are named by the hash of their canonical bytes.

Thread-safe: the event loop puts, pins and evicts while the learning worker reads (a read
reorders the LRU), so every method holds one lock."""
from __future__ import annotations

import threading
from collections import OrderedDict

from gossipnode.core.messages import Model
from gossipnode.wire.tensors import model_hash



class ModelStore:
    """Keeps the last `capacity` models (LRU) plus pinned ones; remembers delta parents and deltas."""

    def __init__(self, capacity: int = 32) -> None:
        self.capacity = capacity
        self._models: OrderedDict[bytes, Model] = OrderedDict()
        self._parent: dict[bytes, bytes] = {}
        self._delta: dict[bytes, Model] = {}
        self._pinned: dict[bytes, int] = {}
        self._lock = threading.RLock()

    def __contains__(self, h: bytes) -> bool:
        with self._lock:
            return h in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def put(self, model: Model, h: bytes | None = None, parent: bytes | None = None,
            delta: Model | None = None) -> bytes:
        h = model_hash(model) if h is None else h   # hashed outside the lock (big models)
        with self._lock:
            self._models[h] = model
            self._models.move_to_end(h)
            if parent is not None and delta is not None:
                self._parent[h] = parent
                self._delta[h] = delta
            self._evict()
            return h

    def get(self, h: bytes) -> Model | None:
        with self._lock:
            m = self._models.get(h)
            if m is not None:
                self._models.move_to_end(h)
            return m

    def delta_of(self, h: bytes) -> tuple[bytes, Model] | None:
        """(base hash, delta) if `h` was made from a base we still hold."""
        with self._lock:
            p = self._parent.get(h)
            if p is None or p not in self._models or h not in self._delta:
                return None
            return p, self._delta[h]

    def parent(self, h: bytes) -> bytes | None:
        with self._lock:
            return self._parent.get(h)

    def pin(self, h: bytes) -> None:
        with self._lock:
            self._pinned[h] = self._pinned.get(h, 0) + 1

    def unpin(self, h: bytes) -> None:
        with self._lock:
            n = self._pinned.get(h, 0) - 1
            if n <= 0:
                self._pinned.pop(h, None)
            else:
                self._pinned[h] = n
            self._evict()

    def _evict(self) -> None:
        with self._lock:
            for h in list(self._models):
                if len(self._models) <= self.capacity:
                    break
                if h not in self._pinned:
                    del self._models[h]
                    self._parent.pop(h, None)
                    self._delta.pop(h, None)
