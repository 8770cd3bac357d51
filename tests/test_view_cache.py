"""View.active, order and ahead are kept per (round, tau, self) and caught up from the view's
change log (activeset.py): they must equal the uncached computation after every kind of change,
including direct item assignment through `entries`."""
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
            assert sorted(a) == sorted(_uncached(v, k, 5, me)) and a[-1] == me
            a.append(b"x")   # a caller's append must not leak into the cache
            assert sorted(v.active(k, 5, me)) == sorted(_uncached(v, k, 5, me))
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

    def ahead(self, k, tau, me, pk):
        full = sample_order(_uncached(self, k, tau, me) + [pk], k)
        return full[: full.index(pk)]

    monkeypatch.setattr(View, "ahead", ahead)
    plain = run_sim(cfg, data=data)
    assert json.dumps(cached["series"]) == json.dumps(plain["series"])
    assert cached["summary"]["bytes_total"] == plain["summary"]["bytes_total"] > 0


def test_active_sets_follow_random_writes_and_log_restarts():
    """Many interleaved writes, rounds and keys (more than the sets kept, and a log restart):
    A(k) as a set, order(k), sample() and ahead() always equal the uncached computation."""
    import random

    from gossipnode.core import sampling

    rng = random.Random(7)
    v, me, tau = View(), b"me", 5
    pks = [bytes([i]) * 4 for i in range(60)]
    for step in range(3000):
        pk = rng.choice(pks)
        op = rng.random()
        if op < 0.6:
            v.apply(pk, rng.randrange(40), rng.randrange(3), rng.choice([Status.JOIN, Status.LEAVE]))
        elif op < 0.7:
            v.bump(pk, rng.randrange(40))
        elif op < 0.75:
            v.entries.pop(pk, None)
        elif op < 0.76:
            v.entries.update({pk: Entry(rng.randrange(40), 5, Status.JOIN)})   # restarts the log
        k = rng.randrange(10, 45)
        want = _uncached(v, k, tau, me)
        assert sorted(v.active(k, tau, me)) == sorted(want)
        assert v.active(k, tau, me)[-1] == me
        order = sample_order(want, k)
        assert v.order(k, tau, me) == order
        for n in (1, 3, 100):
            assert v.sample(k, tau, me, n) == order[:n]
        if step % 700 == 0:   # the process-wide memo starts over (a flood of keys): still exact
            sampling._keys.clear()
        who = rng.choice(pks + [me])
        full = sample_order(want + [who], k)
        assert v.ahead(k, tau, me, who) == full[: full.index(who)]


def test_sample_walks_the_process_wide_order_exactly():
    """Other views' peers in the round's memo (a simulation's other nodes) are skipped; a view
    much smaller than the memo takes the plain path. Both equal the uncached sample."""
    from gossipnode.core.sampling import round_keys

    me, tau, k = b"me", 5, 12
    round_keys(k, [bytes([200, i]) for i in range(150)])   # peers this view does not know
    for size in (3, 40):
        v = View()
        for i in range(size):
            v.apply(bytes([i]), 10 if i % 3 else 2, 1, Status.LEAVE if i % 7 == 0 else Status.JOIN)
        want = sample_order(_uncached(v, k, tau, me), k)
        for n in (1, 2, 5, size + 5):
            assert v.sample(k, tau, me, n) == want[:n]
