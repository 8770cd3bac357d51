"""The model store is shared by the event loop (put, pin, evict) and the learning worker's
threads (get reorders the LRU): every operation holds its lock."""
from __future__ import annotations

import sys
import threading

from gossipnode.runtime.store import ModelStore


def _hammer(store: ModelStore, n: int = 30_000) -> list[BaseException]:
    errors: list[BaseException] = []
    keys = [bytes([i]) * 32 for i in range(8)]

    def writer() -> None:
        try:
            for i in range(n):
                store.put((), keys[i % 8])       # capacity 2: almost every put evicts
        except BaseException as e:   # noqa: BLE001  (recorded for the assertion)
            errors.append(e)

    def reader() -> None:
        try:
            for i in range(n):
                store.get(keys[(i * 3) % 8])     # reorders while the writer evicts
                store.delta_of(keys[i % 8])
        except BaseException as e:   # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as possible: a race shows at once
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    return errors


def test_concurrent_get_and_put_keep_the_store_consistent() -> None:
    store = ModelStore(capacity=2)
    store.put((), b"\xff" * 32)
    store.pin(b"\xff" * 32)
    assert _hammer(store) == []
    assert len(store) <= 3 and b"\xff" * 32 in store   # capacity + the pinned model


def test_without_the_lock_the_same_load_breaks_it() -> None:
    # the check above can fail: the same store with a lock that does nothing
    class NoLock:
        def __enter__(self) -> None: ...

        def __exit__(self, *a: object) -> None: ...

    failures = 0
    for _ in range(20):
        store = ModelStore(capacity=2)
        store._lock = NoLock()   # type: ignore[assignment]
        failures += bool(_hammer(store))
        if failures:
            break
    assert failures, "an unlocked store never failed under the load (the test would prove nothing)"
