"""View.active is cached per (round, tau, self, view version): it must equal the uncached filter
after every kind of change, including direct item assignment through `entries`."""
from gossipnode.core.messages import Status
from gossipnode.core.sampling import sample_order
from gossipnode.core.view import Entry, View


def _uncached(v: View, k: int, tau: int, me: bytes) -> list[bytes]:
    out = [pk for pk, e in v.entries.items()
           if e.status != Status.LEAVE and e.last_active >= k - tau and pk != me]
    return out + [me]


def test_active_cache_invalidates_on_every_change():
    v, me = View(), b"me"
    for i in range(20):
        v.apply(bytes([i]), i, 1, Status.JOIN)
    checks = [
        lambda: v.bump(bytes([1]), 30),
        lambda: v.apply(bytes([50]), 29, 1, Status.JOIN),
        lambda: v.entries.__setitem__(bytes([2]), Entry(30, 2, Status.LEAVE)),
        lambda: v.entries.pop(bytes([3])),
        lambda: setattr(v, "entries", {bytes([9]): Entry(30, 1, Status.JOIN)}),
    ]
    for change in [lambda: None] + checks:
        change()
        for k in (25, 30, 31):
            a = v.active(k, 5, me)
            assert a == _uncached(v, k, 5, me)
            a.append(b"x")   # a caller's append must not leak into the cache
            assert v.active(k, 5, me) == _uncached(v, k, 5, me)
            o = v.order(k, 5, me)
            assert o == sample_order(_uncached(v, k, 5, me), k)
            o.pop()
            assert v.order(k, 5, me) == sample_order(_uncached(v, k, 5, me), k)


def test_simulation_outcome_is_the_same_without_the_cache(monkeypatch):
    import json

    from gossipnode.learn import data as ldata
    from gossipnode.sim import SimConfig, run_sim

    data = ldata.load_mnist1d(num_samples=4000)
    cfg = SimConfig(nodes=16, rounds=4, mnist1d_samples=4000, sample_size=5, eval_samples=500)
    cached = run_sim(cfg, data=data)
    monkeypatch.setattr(View, "active", lambda self, k, tau, me: _uncached(self, k, tau, me))
    monkeypatch.setattr(View, "order", lambda self, k, tau, me: sample_order(_uncached(self, k, tau, me), k))
    plain = run_sim(cfg, data=data)
    assert json.dumps(cached["series"]) == json.dumps(plain["series"])
    assert cached["summary"]["bytes_total"] == plain["summary"]["bytes_total"] > 0
