"""Replay protection: per-sender sliding window over sequence numbers (as IPsec's ESP does).

A sender's seq only has to grow; it need not be dense. Senders start their counter at the
wall clock in microseconds (SeqCounter), so a restarted node, which lost its counter, still
sends numbers above everything it sent before and is not taken for a replayer.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class ReplayGuard:
    """Accept seq if it is above the highest seen from that sender, or inside the window below
    it and not seen yet. Memory is bounded: at most `max_senders` senders are tracked and the
    least recently accepted one is forgotten first (a forgotten sender's next frame is taken as
    a first contact; see SPEC.md "Replay protection").
    """

    def __init__(self, window: int = 1024, max_senders: int = 100_000) -> None:
        if window < 1 or max_senders < 1:
            raise ValueError("window and max_senders must be >= 1")
        self.window = window
        self.max_senders = max_senders
        self._mask = (1 << window) - 1
        # sender -> (highest seq, bitmap; bit i set = seq (highest - i) was seen)
        self._state: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        # decode() may run in worker threads for large frames (asyncio.to_thread)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._state)

    def check(self, sender: bytes, seq: int) -> bool:
        """Would (sender, seq) be accepted? Changes nothing."""
        state = self._state.get(sender)
        if state is None:
            return True
        highest, bitmap = state
        if seq > highest:
            return True
        offset = highest - seq
        return offset < self.window and not (bitmap >> offset) & 1

    def check_and_accept(self, sender: bytes, seq: int) -> bool:
        """Atomically: if (sender, seq) is acceptable, record it and return True."""
        with self._lock:
            if not self.check(sender, seq):
                return False
            self.accept(sender, seq)
            return True

    def accept(self, sender: bytes, seq: int) -> None:
        """Record (sender, seq) as seen. Call only after check() returned True."""
        state = self._state.get(sender)
        if state is None:
            new = (seq, 1)
        else:
            highest, bitmap = state
            if seq > highest:
                shift = seq - highest
                bitmap = 1 if shift >= self.window else ((bitmap << shift) | 1) & self._mask
                new = (seq, bitmap)
            else:
                new = (highest, bitmap | (1 << (highest - seq)))
        self._state[sender] = new
        self._state.move_to_end(sender)
        while len(self._state) > self.max_senders:
            self._state.popitem(last=False)


class SeqCounter:
    """Strictly increasing sequence numbers: the clock in microseconds at start, then +1 a frame.

    Consecutive frames get consecutive numbers, so the receiver's replay window really means
    `window` frames (frames sent concurrently may arrive out of order). A restarted node starts
    from the clock again, which is ahead of its old counter unless it sent more than one frame
    per microsecond of its previous life. `clock` returns integer microseconds (injectable).
    """

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: time.time_ns() // 1000)
        self._last = int(self._clock()) - 1

    def next(self) -> int:
        self._last += 1
        return self._last
