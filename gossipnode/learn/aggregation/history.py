"""Per-peer update histories for SybilWall, and the probabilistic history gossip (ALGORITHMS.md §2)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..state import State, is_weight
from .sketch import check_dims, sketch


@dataclass(frozen=True)
class StoredHistory:
    round: int
    distance: int  # 1 = a direct sender; d + 1 for a record learned from a peer that had it at d
    received_from: str
    history: np.ndarray  # flat float32, weights only: the sum of the Contribution.delta values recorded
    # for the peer. MoDeST aggregation: model_j - the round's base (FoolsGold: j's updates); gossip
    # merge / D-PSGD: received model of j - the receiver's own model (SybilWall's definition).
    # With sketches (HistoryStore.sketch_dims > 0) `history` is the count-sketch of that sum.
    votes: int = 0   # distinct senders that offered this very entry (sketch tables); own: OWN


OWN = 1 << 30      # an entry this node computed itself outranks any equal-round offer
MAX_OFFERS = 8     # conflicting candidates kept per peer until the next read (a bound on memory)


_F32_MAX = float(np.finfo(np.float32).max)


def _clip32(vec: np.ndarray) -> np.ndarray:
    """float32 copy of ``vec`` clipped to the finite float32 range (a stored history never overflows)."""
    return np.clip(np.asarray(vec, dtype=np.float64), -_F32_MAX, _F32_MAX).astype(np.float32)


def _as_vector(history: State | np.ndarray) -> np.ndarray:
    """Flat float32 vector; ValueError if it is not 1-D or holds NaN/inf (a history must stay finite)."""
    if isinstance(history, dict):
        parts = [np.asarray(v).ravel() for k, v in history.items() if is_weight(k, np.asarray(v))]
        vec = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    else:
        vec = np.asarray(history)
        if vec.ndim != 1:
            raise ValueError(f"history must be a flat vector, got shape {vec.shape}")
    if vec.dtype.kind not in "fiub":
        raise ValueError(f"history must be numeric, got {vec.dtype}")
    if not np.isfinite(vec).all():
        raise ValueError("history has non-finite values")
    return _clip32(vec)


class HistoryStore:
    """``peer -> StoredHistory``. Thread-safe: gossip arrives on the event loop, aggregation runs in a worker."""

    def __init__(self, self_id: str | None = None, sketch_dims: int = 0, max_peers: int = 16384) -> None:
        self.self_id = self_id
        self.sketch_dims = check_dims(sketch_dims) if sketch_dims else 0
        self.max_peers = max_peers
        self._records: dict[str, StoredHistory] = {}
        self._offers: dict[str, dict[tuple[int, bytes], tuple[np.ndarray, set[str]]]] = {}
        self._lock = threading.RLock()
        self._size: int | None = self.sketch_dims or None  # all histories must have the same length
        self.version = 0   # bumped on every change (senders cache the encoded table by it)

    def _check_size(self, vec: np.ndarray) -> None:
        if self._size is None:
            self._size = vec.size
        elif vec.size != self._size:
            raise ValueError(f"history has {vec.size} values, store holds {self._size}")

    def record_update(self, peer: str, round: int, delta: State | np.ndarray) -> StoredHistory:
        """A direct update from ``peer``: add it to the peer's history (FoolsGold: sum of updates).

        A record previously learned by gossip is promoted to a direct one (distance 1) and keeps
        accumulating from the history it had.
        """
        vec = _as_vector(delta)
        if self.sketch_dims:
            vec = _clip32(sketch(vec, self.sketch_dims))
        with self._lock:
            self._check_size(vec)
            self._resolve()
            old = self._records.get(peer)
            hist = vec if old is None else _clip32(old.history.astype(np.float64) + vec)
            rnd = round if old is None else max(round, old.round)
            rec = StoredHistory(round=rnd, distance=1, received_from=peer, history=hist, votes=OWN)
            self._records[peer] = rec
            self.version += 1
            return rec

    def offer(self, peer: str, round: int, history: np.ndarray, sender: str) -> None:
        """A sketch-table entry from `sender` (SPEC §15.2). Offers are tallied until the store
        is next read; then, per peer, the candidate most senders sent (then the newest) replaces
        the stored entry if it is newer, or as new with more votes. Entries about this node are
        kept too: it forwards them, so that its next aggregator knows its history."""
        vec = _as_vector(history)
        with self._lock:
            self._check_size(vec)
            cands = self._offers.setdefault(peer, {})
            key = (round, vec.tobytes())
            if key in cands:
                cands[key][1].add(sender)
            elif len(cands) < MAX_OFFERS:
                cands[key] = (vec, {sender})
            self.version += 1   # a pending offer changes what the next table holds

    def _resolve(self) -> None:
        """Apply the pending offers (lock held)."""
        if not self._offers:
            return
        for peer, cands in self._offers.items():
            (rnd, _), (vec, senders) = max(cands.items(), key=lambda kv: (len(kv[1][1]), kv[0][0]))
            old = self._records.get(peer)
            if old is None or rnd > old.round or (rnd == old.round and len(senders) > old.votes):
                self._records[peer] = StoredHistory(rnd, 2, min(senders), vec, len(senders))
        self._offers.clear()
        if len(self._records) > self.max_peers:   # the oldest entries go first
            for p, _ in sorted(self._records.items(), key=lambda kv: kv[1].round)[:len(self._records) - self.max_peers]:
                del self._records[p]
        self.version += 1

    def table(self, limit: int) -> list[tuple[str, StoredHistory]]:
        """Up to `limit` entries, newest rounds first: the sketch table a model message carries."""
        with self._lock:
            self._resolve()
            items = sorted(self._records.items(), key=lambda kv: -kv[1].round)
        return items[:limit]

    def merge_record(
        self, peer: str, round: int, distance: int, history: State | np.ndarray, received_from: str
    ) -> bool:
        """Merge a gossiped record that ``received_from`` holds at ``distance``; True if stored.

        Unknown peer: stored at ``distance + 1``. Known peer: replaced only when ``round`` is newer
        and the stored record is not a direct neighbour's (direct histories are first-hand).
        Records about this node itself are ignored.
        """
        if distance < 1:
            raise ValueError(f"gossiped distance must be >= 1, got {distance}")
        if peer == self.self_id:
            return False
        vec = _as_vector(history)
        with self._lock:
            self._check_size(vec)
            old = self._records.get(peer)
            if old is not None and (old.distance == 1 or round <= old.round):
                return False
            self._records[peer] = StoredHistory(round, distance + 1, received_from, vec)
            self.version += 1
            return True

    def select_records(
        self,
        neighbours: Iterable[str],
        self_id: str | None,
        rng: np.random.Generator,
        lam: float = 0.8,
    ) -> dict[str, tuple[str, StoredHistory]]:
        """For each neighbour n, one record j to send, drawn with P ∝ lam * exp(-lam * (d_j - 1)).

        Excludes self's record, n's own record and records received from n. Neighbours with
        no eligible record are left out of the result.
        """
        self_id = self.self_id if self_id is None else self_id
        with self._lock:
            items = list(self._records.items())
        out: dict[str, tuple[str, StoredHistory]] = {}
        for n in neighbours:
            cands = [(j, r) for j, r in items if j != self_id and j != n and r.received_from != n]
            if not cands:
                continue
            d = np.array([r.distance for _, r in cands], dtype=np.float64)
            p = lam * np.exp(-lam * (d - 1.0))
            out[n] = cands[int(rng.choice(len(cands), p=p / p.sum()))]
        return out

    def get(self, peer: str) -> StoredHistory | None:
        with self._lock:
            self._resolve()
            return self._records.get(peer)

    def items(self) -> list[tuple[str, StoredHistory]]:
        with self._lock:
            self._resolve()
            return list(self._records.items())

    def remove(self, peer: str) -> None:
        with self._lock:
            self._records.pop(peer, None)
            self._offers.pop(peer, None)
            self.version += 1

    # len and `in` leave the tally alone: a status poll must not settle a round's offers early
    def __contains__(self, peer: object) -> bool:
        with self._lock:
            return peer in self._records or peer in self._offers

    def __len__(self) -> int:
        with self._lock:
            return len(self._records.keys() | self._offers.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.peers())

    def peers(self) -> list[str]:
        with self._lock:
            self._resolve()
            return list(self._records)
