"""HistoryStore: direct accumulation, the gossip merge rule, and distance-weighted selection."""

import numpy as np
import pytest

from gossipnode.learn.aggregation import HistoryStore


def v(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


def test_record_update_accumulates() -> None:
    s = HistoryStore("me")
    s.record_update("a", 1, {"w": v(1, 0)})
    rec = s.record_update("a", 2, {"w": v(0, 1)})
    assert rec.distance == 1 and rec.round == 2 and rec.received_from == "a"
    np.testing.assert_array_equal(rec.history, [1, 1])
    with pytest.raises(ValueError):
        s.record_update("b", 1, v(1, 2, 3))  # size mismatch


def test_merge_rule() -> None:
    s = HistoryStore("me")
    # unknown -> stored at d + 1
    assert s.merge_record("x", round=3, distance=1, history=v(1, 1), received_from="n1")
    rec = s.get("x")
    assert rec is not None and rec.distance == 2 and rec.round == 3 and rec.received_from == "n1"
    # known distant record: not replaced by an older or same round...
    assert not s.merge_record("x", round=3, distance=1, history=v(9, 9), received_from="n2")
    assert not s.merge_record("x", round=2, distance=4, history=v(9, 9), received_from="n2")
    np.testing.assert_array_equal(s.get("x").history, [1, 1])  # type: ignore[union-attr]
    # ...replaced by a newer round (any distance), stored at that d + 1
    assert s.merge_record("x", round=5, distance=3, history=v(2, 2), received_from="n2")
    rec = s.get("x")
    assert rec is not None and (rec.round, rec.distance, rec.received_from) == (5, 4, "n2")
    # direct neighbour's record: never replaced by gossip, even if newer
    s.record_update("d", 1, v(1, 0))
    assert not s.merge_record("d", round=10, distance=1, history=v(5, 5), received_from="n1")
    rec = s.get("d")
    assert rec is not None and rec.distance == 1 and rec.round == 1
    # records about ourselves are ignored
    assert not s.merge_record("me", round=1, distance=1, history=v(1, 1), received_from="n1")
    assert "me" not in s
    # a direct update promotes a gossiped record to distance 1 and keeps accumulating
    rec = s.record_update("x", 6, v(1, 0))
    assert rec.distance == 1 and rec.round == 6
    np.testing.assert_array_equal(rec.history, [3, 2])


def test_select_records_exclusions() -> None:
    s = HistoryStore("me")
    s.record_update("me", 1, v(1))  # own record: never sent
    s.record_update("n", 1, v(1))  # the neighbour's own record: never sent to it
    s.merge_record("from_n", 1, 1, v(1), received_from="n")  # learned from n: not sent back
    s.record_update("ok", 1, v(1))
    out = s.select_records(["n"], "me", np.random.default_rng(0))
    assert out["n"][0] == "ok"
    # the neighbour "ok" has only excluded candidates left except "n" and "from_n"
    out = s.select_records(["ok", "ghost"], "me", np.random.default_rng(0))
    assert out["ok"][0] in {"n", "from_n"} and "ghost" in out
    empty = HistoryStore("me")
    assert empty.select_records(["n"], "me", np.random.default_rng(0)) == {}


def test_select_records_follows_distance_distribution() -> None:
    s = HistoryStore("me")
    distances = {"a": 1, "b": 1, "c": 2, "d": 3, "e": 3, "f": 5}
    for peer, d in distances.items():
        if d == 1:
            s.record_update(peer, 1, v(1, 2))
        else:
            s.merge_record(peer, 1, d - 1, v(1, 2), received_from="relay")  # stored at d
    assert {p: s.get(p).distance for p in distances} == distances  # type: ignore[union-attr]
    lam = 0.8
    rng = np.random.default_rng(1234)
    draws = 20_000
    counts = dict.fromkeys(distances, 0)
    for _ in range(draws):
        counts[s.select_records(["n"], "me", rng, lam=lam)["n"][0]] += 1
    p = np.array([lam * np.exp(-lam * (d - 1)) for d in distances.values()])
    expected = draws * p / p.sum()
    observed = np.array(list(counts.values()))
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    assert chi2 < 20.52  # chi-square, 5 degrees of freedom, p = 0.001
    # and the shape is right: a distance-1 record is drawn ~e^(0.8*4) = 24.5x as often as distance 5
    assert counts["a"] / counts["f"] == pytest.approx(np.exp(lam * 4), rel=0.25)


def test_history_never_becomes_non_finite() -> None:
    s = HistoryStore("me")
    for bad in (v(np.nan, 0), v(0, np.inf)):
        with pytest.raises(ValueError):
            s.record_update("a", 1, bad)
        with pytest.raises(ValueError):
            s.merge_record("b", 1, 1, bad, "n")
        with pytest.raises(ValueError):
            s.record_update("a", 1, {"w": bad})
    assert len(s) == 0
    big = np.finfo(np.float32).max
    s.record_update("a", 1, v(big, -big))
    rec = s.record_update("a", 2, v(big, -big))  # the sum overflows float32: clipped, not inf
    assert np.isfinite(rec.history).all() and rec.history[0] == big and rec.history[1] == -big
    assert s.merge_record("c", 1, 1, np.array([1e300, -1e300]), "n")  # float64 beyond float32: clipped
    assert np.isfinite(s.get("c").history).all()


# --- what a history accumulates (issue 10, item 4) ------------------------------------------------
# Gossip merges and D-PSGD (SybilWall's definition): H_j += received model of j - the receiver's
# own model, at every merge. MoDeST aggregation (FoolsGold): H_j += model_j - the round's base.


def _state(rng, scale: float = 1.0) -> dict[str, np.ndarray]:
    return {"w": (scale * rng.normal(size=(4, 3))).astype(np.float32),
            "b": (scale * rng.normal(size=3)).astype(np.float32)}


def _flat(st) -> np.ndarray:
    from gossipnode.learn.state import flatten
    return flatten(st)


def test_daemon_gossip_merge_history_is_received_minus_own() -> None:

    from gossipnode.runtime.aggregating import run_merge
    from gossipnode.learn.aggregation import build_pipeline
    from gossipnode.learn.learner import to_model
    from gossipnode.wire.identity import node_id

    rng = np.random.default_rng(0)
    pipeline = build_pipeline("sybilwall", "mean", "none", self_id="me")
    pk = b"\x01" * 32
    own1, got1, own2, got2 = (_state(rng) for _ in range(4))
    run_merge(pipeline, 1, to_model(own1), [(pk, to_model(got1), b"h1")], 0.5)
    run_merge(pipeline, 2, to_model(own2), [(pk, to_model(got2), b"h2")], 0.5)
    hist = pipeline.filter.store.get(node_id(pk)).history
    expected = (_flat(got1) - _flat(own1)) + (_flat(got2) - _flat(own2))
    np.testing.assert_allclose(hist, expected, rtol=1e-6, atol=1e-6)
    # not j's own updates (got2 - got1), not j's latest model
    assert not np.allclose(hist, _flat(got2) - _flat(got1), atol=1e-3)
    assert not np.allclose(hist, _flat(got2), atol=1e-3)


def test_daemon_modest_aggregation_history_is_update_vs_round_base() -> None:

    from gossipnode.runtime.aggregating import Aggregation, run_pipeline
    from gossipnode.learn.aggregation import build_pipeline
    from gossipnode.learn.sanity import AdoptionGate
    from gossipnode.learn.state import sub
    from gossipnode.learn.learner import to_model
    from gossipnode.runtime.store import ModelStore
    from gossipnode.wire.identity import node_id

    rng = np.random.default_rng(1)
    store = ModelStore()
    agg = Aggregation(store, build_pipeline("sybilwall", "mean", "none", self_id="me"), None, AdoptionGate(0.0))
    pks = [bytes([i]) * 32 for i in (1, 2)]
    expected = {pk: 0.0 for pk in pks}
    for rnd in (1, 2):
        base = _state(rng)
        hb = store.put(to_model(base))
        held = []
        for pk in pks:
            upd = _state(rng, 0.1)
            model = {k: base[k] + upd[k] for k in base}
            h = store.put(to_model(model), parent=hb, delta=to_model(sub(model, base)))
            held.append((pk, to_model(model), h))
            expected[pk] = expected[pk] + _flat(model) - _flat(base)
        run_pipeline(agg, rnd, held, b"", ())
    for pk in pks:
        np.testing.assert_allclose(agg.pipeline.filter.store.get(node_id(pk)).history, expected[pk],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sketch_dims", [0, 128])
@pytest.mark.parametrize("protocol,beta", [("gossip", 0.5), ("dpsgd", None)])
def test_sim_merge_history_is_received_minus_own(protocol, beta, sketch_dims) -> None:
    from gossipnode.learn import data as ldata
    from gossipnode.learn.aggregation.sketch import sketch
    from gossipnode.sim import SimConfig, make_engine

    sim = make_engine(SimConfig(protocol=protocol, nodes=3, rounds=1, filter="sybilwall", topology="ring",
                                history_sketch=sketch_dims), ldata.load_mnist1d(num_samples=600))
    rng = np.random.default_rng(2)
    init = sim.models[sim.initial]

    def noisy() -> bytes:
        return sim.put({k: (v + rng.normal(size=v.shape).astype(v.dtype) if v.dtype.kind == "f" else v)
                        for k, v in init.items()})

    expected = 0.0
    for rnd in (1, 2):
        own, got = noisy(), noisy()
        sim.aggregate(0, rnd, [(1, got)], own=own, beta=beta)
        expected = expected + _flat(sim.models[got]) - _flat(sim.models[own])
    hist = sim.pipeline(0).filter.store.get(sim.node_name(1)).history
    if sketch_dims:   # the sketch of a sum is the sum of the sketches
        expected = sketch(expected, sketch_dims)
    np.testing.assert_allclose(hist, expected, rtol=1e-5, atol=1e-4)


def test_count_sketch_is_linear_keeps_cosines_and_chunks_alike(monkeypatch) -> None:
    from gossipnode.learn.aggregation import sketch as sk
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(5210), rng.standard_normal(5210)
    np.testing.assert_allclose(sk.sketch(x + 2 * y, 128), sk.sketch(x, 128) + 2 * sk.sketch(y, 128), atol=1e-9)
    errs = []
    for _ in range(50):
        a = rng.standard_normal(5210)
        b = 0.5 * a + rng.standard_normal(5210) * rng.uniform(0, 2)
        sa, sb = sk.sketch(a, 128), sk.sketch(b, 128)
        cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
        errs.append(abs(sa @ sb / np.linalg.norm(sa) / np.linalg.norm(sb) - cos))
    assert np.mean(errs) < 0.1 and max(errs) < 0.35
    whole = sk.sketch(x, 64)
    monkeypatch.setattr(sk, "_CACHE_SIZE", 100)   # the chunked path of big models
    monkeypatch.setattr(sk, "_CHUNK", 1000)
    np.testing.assert_allclose(sk.sketch(x, 64), whole, atol=1e-9)
    for bad in (0, 3, 2048):
        with pytest.raises(ValueError):
            sk.sketch(x, bad)


def test_sketch_store_tallies_offers_and_own_updates_win_ties() -> None:
    from gossipnode.learn.aggregation.sketch import sketch
    s = HistoryStore("me", sketch_dims=8)
    one, two = np.ones(8), np.full(8, 2.0)
    s.offer("j", 5, two, "forger")          # a lone sender's entry ...
    s.offer("j", 5, one, "a")
    s.offer("j", 5, one, "b")               # ... loses to the one two senders sent
    r = s.get("j")
    assert r.round == 5 and r.votes == 2 and np.allclose(r.history, 1.0)
    s.offer("j", 4, two, "c")               # older: ignored
    s.offer("j", 5, two, "c")               # same round, one sender: fewer votes than stored
    assert np.allclose(s.get("j").history, 1.0)
    delta = np.arange(16, dtype=np.float32)
    s.record_update("j", 6, delta)          # own aggregation: stored + sketch(update)
    r = s.get("j")
    assert r.round == 6 and np.allclose(r.history, 1.0 + sketch(delta, 8), atol=1e-5)
    for who in "xyz":                       # three senders at the same round do not replace it
        s.offer("j", 6, two, who)
    assert np.allclose(s.get("j").history, r.history)
    s.offer("j", 7, two, "x")               # a newer round does (the chain moved on)
    assert s.get("j").round == 7
    s.offer("me", 3, one, "a")              # entries about itself are kept, to be forwarded
    assert s.get("me") is not None
    assert [p for p, _ in s.table(1)] == ["j"]      # newest rounds first, bounded
    with pytest.raises(ValueError):
        s.offer("k", 1, np.ones(9), "a")


def test_sketch_store_bounds_peers_and_offers() -> None:
    from gossipnode.learn.aggregation import history as hmod
    s = HistoryStore("me", sketch_dims=4, max_peers=3)
    for i in range(5):
        s.offer(f"p{i}", i + 1, np.ones(4), "a")
    assert sorted(s.peers()) == ["p2", "p3", "p4"]    # the oldest rounds went
    for i in range(hmod.MAX_OFFERS + 5):
        s.offer("p9", 1, np.full(4, float(i)), f"s{i}")
    assert len(s._offers["p9"]) == hmod.MAX_OFFERS


def test_counting_a_sketch_store_does_not_settle_the_tally() -> None:
    """A status poll (len, `in`) mid-round must not store a forger's newer-round entry before the
    honest senders' entries arrive to outvote it."""
    s = HistoryStore("me", sketch_dims=4)
    s.offer("j", 9, np.full(4, 5.0), "forger")
    assert len(s) == 1 and "j" in s
    s.offer("j", 5, np.ones(4), "a")
    s.offer("j", 5, np.ones(4), "b")
    r = s.get("j")
    assert r.round == 5 and r.votes == 2


def test_daemon_drops_updates_trained_from_a_model_it_would_refuse() -> None:
    """A member that sent a poisoned round model adopts it and trains from it; measured against
    the honest base its update carries the poison. The aggregator drops updates whose base it did
    not adopt and would refuse (`unfit_base`), keeps those from an unadopted but fit base, and
    with nothing left sends its current model again."""
    from gossipnode.learn.aggregation import build_pipeline
    from gossipnode.learn.learner import to_model, to_state
    from gossipnode.learn.sanity import AdoptionGate
    from gossipnode.learn.state import sub
    from gossipnode.runtime.aggregating import Aggregation, run_pipeline
    from gossipnode.runtime.store import ModelStore
    from gossipnode.wire.identity import node_id

    rng = np.random.default_rng(7)
    good = _state(rng)
    probes = []

    def probe(model) -> float:   # loss on "our data": the distance from the good model
        probes.append(1)
        return float(np.linalg.norm(_flat(to_state(model)) - _flat(good)))

    store = ModelStore()
    cur = store.put(to_model(good))
    near = store.put(to_model({k: v + 0.01 for k, v in good.items()}))     # another honest lineage
    poison = store.put(to_model({k: v + 5.0 for k, v in good.items()}))    # refused by us
    agg = Aggregation(store, build_pipeline("none", "mean", "none"), probe, AdoptionGate(0.5))
    pks = [bytes([i]) * 32 for i in (1, 2, 3)]

    def trained(parent: bytes, pk: bytes) -> tuple[bytes, object, bytes]:
        base = to_state(store.get(parent))
        st = {k: v + 0.05 * rng.normal(size=v.shape).astype(np.float32) for k, v in base.items()}
        return pk, to_model(st), store.put(to_model(st), parent=parent, delta=to_model(sub(st, base)))

    held = [trained(cur, pks[0]), trained(near, pks[1]), trained(poison, pks[2])]
    out, info = run_pipeline(agg, 5, held, cur, (cur,))
    assert info["unfit_base"] == [node_id(pks[2])] and info["contributors"] == 2, info
    assert probe(out) < 0.5, "the poisoned lineage reached the aggregate"
    # without the check the poison is in the mean
    plain = Aggregation(store, agg.pipeline, None, AdoptionGate(0.5))
    out2, info2 = run_pipeline(plain, 5, held, cur, (cur,))
    assert "unfit_base" not in info2 and probe(out2) > 1.0
    # nothing fit: the current model again
    out3, info3 = run_pipeline(agg, 6, [trained(poison, pks[2])], cur, (cur,))
    assert info3["fallback"] == "current" and info3["unfit_base"] == [node_id(pks[2])]
    assert store.put(out3) == cur
    # on skewed local data the rule is off (honest lineages refuse each other there): as without it
    skewed = Aggregation(store, agg.pipeline, probe, AdoptionGate(0.5, skew=1.0))
    out4, info4 = run_pipeline(skewed, 5, held, cur, (cur,))
    assert "unfit_base" not in info4 and info4["contributors"] == 3
    # a base we adopted is never probed
    probes.clear()
    run_pipeline(agg, 7, [trained(cur, pks[0])], cur, (cur,))
    assert len(probes) == 2   # the self-check's two (its reference and the result), no base probe
    # an unadopted base: the current model is probed once for both checks
    probes.clear()
    run_pipeline(agg, 8, [trained(near, pks[1])], cur, (cur,))
    assert len(probes) == 3   # current, the base `near`, the result


def test_sim_drops_updates_trained_from_a_model_it_would_refuse() -> None:
    """The simulator applies the daemon's `unfit_base` rule: an honest aggregator leaves out the
    updates trained from a model it does not hold and would refuse; with none left it sends its
    current model again."""
    from gossipnode.learn import data as ldata
    from gossipnode.sim import SimConfig, make_engine

    sim = make_engine(SimConfig(protocol="modest", nodes=3, rounds=1, filter="none", correct="none"),
                      ldata.load_mnist1d(num_samples=600))
    cur = sim.current[0] = sim.initial   # node 0 holds the initial model
    init = sim.models[cur]
    poison = sim.put({k: (v + 30.0 if v.dtype.kind == "f" else v) for k, v in init.items()})
    rng = np.random.default_rng(3)

    def trained(parent: bytes) -> bytes:
        base = sim.models[parent]
        return sim.put({k: (v + 0.01 * rng.normal(size=v.shape).astype(v.dtype) if v.dtype.kind == "f" else v)
                        for k, v in base.items()}, parent=parent)

    good, bad = trained(cur), trained(poison)
    assert sim.fit_bases(0, [(1, good), (2, bad)]) == [(1, good)]
    assert sim.models_rejected["unfit_base"] == 1
    assert sim.aggregate(0, 1, [(2, bad)]) == cur
    # a node on skewed labels keeps the update (the rule is off there, as in the daemon)
    skewed = make_engine(SimConfig(protocol="modest", nodes=3, rounds=1, filter="none", correct="none",
                                   partition="dirichlet:0.1"), ldata.load_mnist1d(num_samples=600))
    skewed.current[0] = skewed.initial
    for h, p in ((poison, None), (bad, poison)):
        skewed.put(sim.models[h], parent=p)
    assert skewed.gate_of(0).skew > 0.25 and skewed.fit_bases(0, [(2, bad)]) == [(2, bad)]
