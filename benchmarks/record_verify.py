"""Cost of verifying membership records (SPEC 4.1): a view of 1,000 signed records.

    PYTHONPATH=. .venv/bin/python benchmarks/record_verify.py [--records 1000] [--repeat 5]

Prints, per 1,000-record view: Ed25519 verification of every record (no cache), the same with
the verified-record cache warm, and the core's merge of a view whose records it already holds
(no verification at all), with ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import random
import time

from gossipnode.core.config import ModestConfig
from gossipnode.core.messages import Status, ViewRecord, ViewShare
from gossipnode.core.modest import ModestCore
from gossipnode.wire.identity import Identity
from gossipnode.wire.records import Ed25519RecordAuth

NET = "bench"


def best(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    ids = [Identity.from_seed(i.to_bytes(32, "big")) for i in range(1, a.records + 1)]
    recs = tuple(Ed25519RecordAuth(x, NET).sign(ViewRecord(x.public_key, 10, 1, Status.JOIN,
                                                           (f"http://127.0.0.1:{9000 + i % 1000}",)))
                 for i, x in enumerate(ids))
    me = Identity.generate()

    def cold() -> None:
        auth = Ed25519RecordAuth(me, NET)
        assert all(auth.verify(r) for r in recs)

    warm_auth = Ed25519RecordAuth(me, NET)
    cold_once = all(warm_auth.verify(r) for r in recs)
    assert cold_once

    def warm() -> None:
        assert all(warm_auth.verify(r) for r in recs)

    core = ModestCore(ModestConfig(max_peers=a.records + 10), me.public_key, ("http://127.0.0.1:1",), b"\0" * 32,
                      random.Random(0), auth=Ed25519RecordAuth(me, NET))
    core.start(0.0, [])
    for r in recs:
        core.view.accept(r)
    n0 = core.auth.verifications

    def merge() -> None:
        core.handle(1.0, recs[0].peer, ViewShare(10, recs))

    t_cold, t_warm, t_merge = best(cold, a.repeat), best(warm, a.repeat), best(merge, a.repeat)
    print(f"{a.records} records, best of {a.repeat}:")
    print(f"  verify all, no cache     {t_cold * 1e3:8.2f} ms  ({t_cold / a.records * 1e6:.1f} us/record)")
    print(f"  verify all, cache warm   {t_warm * 1e3:8.2f} ms  ({t_cold / t_warm:.0f}x faster)")
    print(f"  core merge of held view  {t_merge * 1e3:8.2f} ms  ({t_cold / t_merge:.0f}x faster; "
          f"{core.auth.verifications - n0} verifications)")


if __name__ == "__main__":
    main()
