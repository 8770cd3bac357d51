"""Ping-walk: find the first `count` reachable candidates of an ordered list."""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable


@dataclass
class _Pending:
    nonce: int
    first_sent: float
    last_sent: float


@dataclass
class PingWalk:
    """Ping the first `count` candidates at once; on a time-out move on to the next one.

    `send_ping(peer, nonce)` is called for every (re-)ping; `on_done(reachable)` once, with the
    reachable candidates in candidate order.
    """
    candidates: list[bytes]
    count: int
    ping_timeout: float
    ping_interval: float
    send_ping: Callable[[bytes, int], None]
    on_done: Callable[[list[bytes]], None]
    is_reachable_now: Callable[[bytes], bool]
    new_nonce: Callable[[], int]
    inherited: dict[bytes, _Pending] = field(default_factory=dict)   # pings in flight from a pre-walk
    more: Callable[[], list[bytes]] | None = None   # further candidates, computed only if needed
    next_idx: int = 0
    pending: dict[bytes, _Pending] = field(default_factory=dict)
    answered: set[bytes] = field(default_factory=set)
    failed: list[bytes] = field(default_factory=list)
    done: bool = False

    def start(self, now: float) -> None:
        self._fill(now)
        self._check()

    def _fill(self, now: float) -> None:
        while len(self.answered) + len(self.pending) < self.count:
            if self.next_idx >= len(self.candidates):
                if self.more is None:
                    break
                more, self.more = self.more, None
                have = set(self.candidates)
                for p in more():   # may repeat itself (two rounds' samples) and the list
                    if p not in have:
                        have.add(p)
                        self.candidates.append(p)
                continue
            pk = self.candidates[self.next_idx]
            self.next_idx += 1
            if self.is_reachable_now(pk):
                self.answered.add(pk)
                continue
            if pk in self.inherited:   # already pinged: wait for that answer, do not ping again
                self.pending[pk] = self.inherited.pop(pk)
                continue
            nonce = self.new_nonce()
            self.pending[pk] = _Pending(nonce, now, now)
            self.send_ping(pk, nonce)

    def _check(self) -> None:
        if self.done:
            return
        exhausted = self.next_idx >= len(self.candidates) and not self.pending and self.more is None
        if len(self.answered) >= self.count or exhausted:
            self.done = True
            pos = {pk: i for i, pk in enumerate(self.candidates)}
            self.on_done(sorted(self.answered, key=pos.__getitem__)[: self.count])

    def on_pong(self, now: float, peer: bytes, nonce: int) -> bool:
        p = self.pending.get(peer)
        if self.done or p is None or p.nonce != nonce:
            return False
        del self.pending[peer]
        self.answered.add(peer)
        self._fill(now)
        self._check()
        return True

    def tick(self, now: float) -> None:
        if self.done:
            return
        for pk, p in list(self.pending.items()):
            # Same expressions as next_deadline(), so a tick at the deadline always acts.
            if now >= p.first_sent + self.ping_timeout:
                del self.pending[pk]
                self.failed.append(pk)
            elif now >= p.last_sent + self.ping_interval:
                p.last_sent = now
                self.send_ping(pk, p.nonce)
        self._fill(now)
        self._check()

    def next_deadline(self) -> float | None:
        if self.done or not self.pending:
            return None
        return min(min(p.first_sent + self.ping_timeout, p.last_sent + self.ping_interval)
                   for p in self.pending.values())
