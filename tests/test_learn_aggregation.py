"""Aggregation pipeline: SybilWall/FoolsGold weights, combiners, Krum, variance correction."""

import numpy as np
import pytest

from gossipnode.learn.aggregation import (
    AggregationError,
    Contribution,
    HistoryStore,
    SybilWallFilter,
    build_pipeline,
    foolsgold_weights,
)
from gossipnode.learn.models import build_model
from gossipnode.learn.state import State, state_from_module, sub


def _contrib(peer: str, vec, base: State | None = None, rnd: int | None = None) -> Contribution:
    model = {"w": np.asarray(vec, dtype=np.float32)}
    base = base if base is not None else {"w": np.zeros_like(model["w"])}
    return Contribution(peer, model, sub(model, base), rnd)


# --- SybilWall / FoolsGold weights -----------------------------------------------------------------


def test_foolsgold_pardoning_and_logit_by_hand() -> None:
    # Three histories (h3 scaled by 2: cosine similarity ignores length):
    h1 = [1.0, 0.0, 0.0]
    h2 = [0.5, np.sqrt(0.75), 0.0]
    h3 = [0.6, 0.0, 2 * np.sqrt(0.91)]
    # cosine similarities: cs12 = 0.5, cs13 = 0.3, cs23 = 0.15 (diagonal 0)
    # v = row maxima = [0.5, 0.5, 0.3]
    # pardoning (v_i < v_j -> cs_ij *= v_i / v_j): only row 3 is pardoned:
    #   cs31 = 0.3 * 0.3 / 0.5 = 0.18, cs32 = 0.15 * 0.3 / 0.5 = 0.09
    # w = 1 - row max = [1 - 0.5, 1 - 0.5, 1 - 0.18] = [0.5, 0.5, 0.82]
    # normalised by max: [0.5 / 0.82, 0.5 / 0.82, 1] = [0.609756..., 0.609756..., 1]
    # logit: ln(0.609756 / 0.390244) + 0.5 = ln(1.5625) + 0.5 = 0.946287...; ln(1/0) = inf -> 1
    # (without pardoning w3 would be 0.7 and all three would clip to 1)
    w = foolsgold_weights(np.array([h1, h2, h3]))
    expected = np.log(1.5625) + 0.5
    np.testing.assert_allclose(w, [expected, expected, 1.0], rtol=1e-9)
    assert abs(expected - 0.9462871) < 1e-6

    # through the pipeline (filter only: none correction, mean): weights normalised to sum 1
    pipe = build_pipeline("sybilwall", "mean", "none")
    res = pipe.aggregate([_contrib("a", h1), _contrib("b", h2), _contrib("c", h3)], base={"w": np.zeros(3)})
    total = 2 * expected + 1.0
    assert res.scores == pytest.approx({"a": expected, "b": expected, "c": 1.0})
    assert res.weights == pytest.approx({"a": expected / total, "b": expected / total, "c": 1 / total})
    manual = (expected * np.array(h1) + expected * np.array(h2) + np.array(h3)) / total
    np.testing.assert_allclose(res.state["w"], manual, rtol=1e-6)


def test_foolsgold_logit_interior_value_by_hand() -> None:
    # Orthogonal pair (cs = 0) plus two vectors with cs = 0.6 to each other:
    # w = [1, 1, 0.4, 0.4] ... with a third-party tie: cs13 = cs14 = 0 etc.
    h = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.6, 0.8]])
    # cs34 = 0.6, all others 0 -> v = [0, 0, 0.6, 0.6]; no pardoning (rows 1,2 are 0 anyway)
    # w = [1, 1, 0.4, 0.4] -> max 1 -> logit(0.4) = ln(0.4/0.6) + 0.5 = 0.094535...
    w = foolsgold_weights(h)
    np.testing.assert_allclose(w, [1.0, 1.0, np.log(0.4 / 0.6) + 0.5, np.log(0.4 / 0.6) + 0.5], rtol=1e-9)


def test_sybil_cluster_zeroed_honest_kept() -> None:
    rng = np.random.default_rng(0)
    dim = 2000
    honest = [_contrib(f"h{i}", rng.normal(size=dim)) for i in range(10)]
    poison = rng.normal(size=dim)
    sybils = [_contrib(f"s{i}", poison) for i in range(5)]
    pipe = build_pipeline()  # sybilwall -> mean -> vc
    res = pipe.aggregate(honest + sybils, base={"w": np.zeros(dim, np.float32)})
    for i in range(10):
        assert res.scores[f"h{i}"] > 0.95
    for i in range(5):
        assert res.scores[f"s{i}"] < 0.05
    assert set(res.zeroed) == {f"s{i}" for i in range(5)}
    assert sum(res.weights.values()) == pytest.approx(1.0)


def test_sybilwall_uses_gossiped_histories_foolsgold_does_not() -> None:
    rng = np.random.default_rng(1)
    dim = 1000
    poison = rng.normal(size=dim)
    contribs = [_contrib(f"h{i}", rng.normal(size=dim), rnd=1) for i in range(4)] + [
        _contrib("s0", poison, rnd=1)
    ]
    sw = build_pipeline("sybilwall", self_id="me")
    fg = build_pipeline("foolsgold", self_id="me")
    for pipe in (sw, fg):
        # the other Sybils are only known from gossip (distance 2)
        for i in range(1, 5):
            pipe.filter.store.merge_record(f"s{i}", 1, 1, poison.astype(np.float32), received_from="h0")
    base = {"w": np.zeros(dim, np.float32)}
    assert sw.aggregate(contribs, base).scores["s0"] == 0.0
    assert fg.aggregate(contribs, base).scores["s0"] > 0.9
    # distant histories are never averaged in
    assert set(sw.aggregate(contribs, base).weights) == {c.peer for c in contribs}


def test_sybilwall_round_twins_zeroed_though_their_histories_differ() -> None:
    """Two Sybil identities seen apart in earlier rounds have different histories, so FoolsGold's
    weights keep them; in this round they send one model: copies (cosine >= 0.999) get weight 0.
    Honest updates of a round, alike but not copies (cosine ~0.3), keep theirs; off: the paper's."""
    rng = np.random.default_rng(2)
    dim = 1000
    base = {"w": np.zeros(dim, np.float32)}
    poison, common = rng.normal(size=dim), rng.normal(size=dim)
    honest = [_contrib(f"h{i}", 0.7 * common + rng.normal(size=dim), rnd=3) for i in range(4)]
    sybils = [_contrib(f"s{i}", poison, rnd=3) for i in range(2)]
    for twins, want in (("on", 0.0), ("off", None)):
        pipe = build_pipeline("sybilwall", self_id="me", round_twins=twins == "on")
        for i in range(2):   # each identity's earlier rounds, seen by this node: unrelated updates
            pipe.filter.store.record_update(f"s{i}", 1, rng.normal(size=dim).astype(np.float32) * 5)
        res = pipe.aggregate(honest + sybils, base)
        if want is None:
            assert min(res.scores[f"s{i}"] for i in range(2)) > 0.5
        else:
            assert all(res.scores[f"s{i}"] == 0.0 for i in range(2))
        assert all(res.scores[f"h{i}"] > 0 for i in range(4))
    assert not build_pipeline("foolsgold").filter.round_twins   # FoolsGold as published


def test_sybilwall_accumulates_histories() -> None:
    flt = SybilWallFilter(self_id="me", store=HistoryStore("me"))
    pipe = build_pipeline("none")
    pipe.filter = flt
    pipe.aggregate([_contrib("a", [1.0, 0.0], rnd=1)], base=None)
    pipe.aggregate([_contrib("a", [0.0, 2.0], rnd=2)], base=None)
    rec = flt.store.get("a")
    assert rec is not None and rec.round == 2 and rec.distance == 1
    np.testing.assert_allclose(rec.history, [1.0, 2.0])  # sum of deltas, not the latest model


def test_all_rejected_falls_back() -> None:
    same = [_contrib("a", [1.0, 2.0]), _contrib("b", [1.0, 2.0])]  # identical -> both weight 0
    base = {"w": np.array([5.0, 5.0], np.float32)}
    res = build_pipeline().aggregate(same, base=base)
    np.testing.assert_array_equal(res.state["w"], base["w"])
    assert sorted(res.zeroed) == ["a", "b"]
    with pytest.raises(AggregationError):
        build_pipeline().aggregate(same, base=None)


# --- combiners and Krum --------------------------------------------------------------------------


VALUES = [[0.0, 10.0], [1.0, -3.0], [2.0, 4.0], [4.0, 5.0], [100.0, 6.0]]


def _many() -> list[Contribution]:
    return [_contrib(f"p{i}", v) for i, v in enumerate(VALUES)]


def test_mean_median_trimmed_mean_by_hand() -> None:
    base = {"w": np.zeros(2, np.float32)}
    mean = build_pipeline("none", "mean", "none").aggregate(_many(), base).state["w"]
    np.testing.assert_allclose(mean, [107 / 5, 22 / 5], rtol=1e-6)
    med = build_pipeline("none", "median", "none").aggregate(_many(), base).state["w"]
    np.testing.assert_allclose(med, [2.0, 5.0])  # sorted cols: 0,1,2,4,100 | -3,4,5,6,10
    tm = build_pipeline("none", "trimmed-mean", "none", trim_beta=0.2).aggregate(_many(), base).state["w"]
    np.testing.assert_allclose(tm, [(1 + 2 + 4) / 3, (4 + 5 + 6) / 3], rtol=1e-6)  # 1 cut each side


def test_mean_on_models_equals_base_plus_mean_delta() -> None:
    rng = np.random.default_rng(2)
    base = {"w": rng.normal(size=50).astype(np.float32)}
    contribs = [_contrib(f"p{i}", base["w"] + rng.normal(size=50), base) for i in range(4)]
    res = build_pipeline("none", "mean", "none").aggregate(contribs, base)
    mean_delta = np.mean([c.delta["w"] for c in contribs], axis=0)
    np.testing.assert_allclose(res.state["w"], base["w"] + mean_delta, atol=1e-6)


def test_krum_and_multikrum_by_hand() -> None:
    # first coordinates 0, 1, 2, 4, 100 (second coordinates 0), f = 1 -> n - f - 2 = 2 neighbours:
    # scores: 0 -> 1 + 4 = 5; 1 -> 1 + 1 = 2; 2 -> 1 + 4 = 5; 4 -> 4 + 9 = 13; 100 -> 96^2 + 98^2
    pts = [[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [4.0, 0.0], [100.0, 0.0]]
    cs = [_contrib(f"p{i}", v) for i, v in enumerate(pts)]
    base = {"w": np.zeros(2, np.float32)}
    res = build_pipeline("krum", "mean", "none", krum_f=1).aggregate(cs, base)
    assert res.scores == {"p0": 0.0, "p1": 1.0, "p2": 0.0, "p3": 0.0, "p4": 0.0}
    np.testing.assert_allclose(res.state["w"], [1.0, 0.0])
    res = build_pipeline("multikrum", "mean", "none", krum_f=1, multikrum_m=3).aggregate(cs, base)
    assert sorted(res.zeroed) == ["p3", "p4"]
    np.testing.assert_allclose(res.state["w"], [1.0, 0.0])  # mean of 0, 1, 2


# --- own model (gossip learning) and buffers -----------------------------------------------------


def test_gossip_merge_with_own_model() -> None:
    own = {"w": np.array([2.0, 2.0], np.float32)}
    cs = [_contrib("a", [0.0, 4.0]), _contrib("b", [4.0, 0.0])]
    pipe = build_pipeline("none", "mean", "none")
    res = pipe.aggregate(cs, base=None, own=own, beta=0.5)
    np.testing.assert_allclose(res.state["w"], [2.0, 2.0])  # 0.5 * own + 0.5 * [2, 2]
    res = pipe.aggregate(cs, base=None, own={"w": np.array([8.0, 8.0], np.float32)}, beta=0.25)
    np.testing.assert_allclose(res.state["w"], [0.25 * 8 + 0.75 * 2] * 2)
    res = pipe.aggregate(cs, base=None, own={"w": np.array([8.0, 8.0], np.float32)}, beta=None)
    np.testing.assert_allclose(res.state["w"], [(8 + 0 + 4) / 3, (8 + 4 + 0) / 3], rtol=1e-6)
    assert res.weights == pytest.approx({"a": 1 / 3, "b": 1 / 3})


def test_buffers_not_averaged_and_scalars_not_corrected() -> None:
    def st(v: float, n: int) -> State:
        return {
            "lin.weight": np.full((2, 2), v, np.float32) + np.eye(2, dtype=np.float32) * v,
            "scale": np.array([v], np.float32),
            "bn.running_mean": np.full(2, v, np.float32),
            "bn.num_batches_tracked": np.array(n, np.int64),
        }

    cs = [Contribution("a", st(1.0, 3), st(1.0, 3)), Contribution("b", st(3.0, 7), st(3.0, 7))]
    res = build_pipeline("none", "mean", "vc").aggregate(cs, base=None)
    assert res.state["scale"][0] == pytest.approx(2.0)  # averaged, no correction
    np.testing.assert_array_equal(res.state["bn.running_mean"], [1.0, 1.0])  # first contribution's
    assert res.state["bn.num_batches_tracked"] == 3 and res.state["bn.num_batches_tracked"].dtype == np.int64
    own = st(9.0, 11)
    res = build_pipeline("none", "mean", "vc").aggregate(cs, base=None, own=own)
    np.testing.assert_array_equal(res.state["bn.running_mean"], [9.0, 9.0])  # own buffers
    assert res.state["bn.num_batches_tracked"] == 11


def test_mismatched_and_duplicate_contributions_rejected() -> None:
    with pytest.raises(AggregationError, match="shape"):
        build_pipeline("none").aggregate([_contrib("a", [1.0, 2.0]), _contrib("b", [1.0, 2.0, 3.0])], None)
    with pytest.raises(AggregationError, match="duplicate"):
        build_pipeline("none").aggregate([_contrib("a", [1.0]), _contrib("a", [2.0])], None)


def test_build_pipeline_names_params_describe() -> None:
    d = build_pipeline("multikrum", "trimmed-mean", "vc", krum_f=2, multikrum_m=4, trim_beta=0.25).describe()
    assert d["filter"] == {"name": "multikrum", "f": 2, "m": 4}
    assert d["combine"] == {"name": "trimmed-mean", "beta": 0.25}
    assert d["correct"]["name"] == "vc"
    assert build_pipeline().describe()["filter"]["name"] == "sybilwall"
    with pytest.raises(ValueError, match="unknown filter"):
        build_pipeline("nope")
    with pytest.raises(ValueError, match="unknown aggregation parameter"):
        build_pipeline(krum_ff=1)


# --- variance correction -------------------------------------------------------------------------


def _eight_independent_cnn1d() -> list[Contribution]:
    states = [state_from_module(build_model("cnn1d", (40,), 10, seed=s)) for s in range(8)]
    return [Contribution(f"n{i}", st, st) for i, st in enumerate(states)]


def test_variance_correction_restores_target_variance() -> None:
    cs = _eight_independent_cnn1d()
    vc = build_pipeline("none", "mean", "vc-always").aggregate(cs, base=None).state
    default = build_pipeline("none", "mean", "vc").aggregate(cs, base=None).state
    plain = build_pipeline("none", "mean", "none").aggregate(cs, base=None).state
    for name, tensor in vc.items():
        if tensor.size <= 1:
            continue
        target = np.mean([c.model[name].var() for c in cs])
        assert tensor.var() == pytest.approx(target, rel=0.01), name
        ratio = plain[name].var() / target
        # ~1/8: the vanishing variance (noisier for the 10- and 25-element bias vectors)
        lo, hi = (0.1, 0.15) if tensor.size >= 1000 else (0.03, 0.3)
        assert lo < ratio < hi, (name, ratio)
        # the tensor mean is preserved by the rescaling
        assert tensor.mean() == pytest.approx(plain[name].mean(), abs=1e-6)
        # the default rule: the same for these uncorrelated models, biases (< 100 values) left alone
        if tensor.size >= 100:
            assert default[name].var() == pytest.approx(target, rel=0.01), name
        else:
            np.testing.assert_array_equal(default[name], plain[name])


def test_variance_correction_noop_for_correlated_inputs_and_damping() -> None:
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=1000).astype(np.float32)}
    cs = [_contrib(f"p{i}", base["w"] + 0.01 * rng.normal(size=1000), base) for i in range(6)]
    plain = build_pipeline("none", "mean", "none").aggregate(cs, base).state["w"]
    vc = build_pipeline("none", "mean", "vc").aggregate(cs, base).state["w"]
    np.testing.assert_allclose(vc, plain, atol=1e-3)  # shared base: the factor is ~1

    ind = [_contrib(f"p{i}", rng.normal(size=1000)) for i in range(4)]
    plain = build_pipeline("none", "mean", "none").aggregate(ind, None).state["w"]
    full = build_pipeline("none", "mean", "vc").aggregate(ind, None).state["w"]
    half = build_pipeline("none", "mean", "vc", vc_rho=0.5).aggregate(ind, None).state["w"]
    mu = plain.mean()
    f_full = (full - mu).std() / (plain - mu).std()
    f_half = (half - mu).std() / (plain - mu).std()
    assert f_half == pytest.approx(1 + 0.5 * (f_full - 1), rel=1e-4)


# --- one non-finite contribution never zeroes the honest ones (issue 9) -----------------------------


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("filter_", ["sybilwall", "foolsgold", "krum", "multikrum", "none"])
@pytest.mark.parametrize("combine", ["mean", "median", "trimmed-mean"])
@pytest.mark.parametrize("correct", ["vc", "vc-always", "none"])
def test_one_non_finite_contribution_is_dropped(filter_: str, combine: str, correct: str,
                                                bad_value: float) -> None:
    rng = np.random.default_rng(3)
    base = {"w": rng.normal(size=50).astype(np.float32), "b": np.zeros(1, np.float32)}
    honest = []
    for i in range(5):
        model = {"w": base["w"] + rng.normal(scale=0.1, size=50).astype(np.float32),
                 "b": np.full(1, 0.1 * i, np.float32)}
        honest.append(Contribution(f"h{i}", model, sub(model, base), 1))
    poisoned = {"w": base["w"].copy(), "b": np.zeros(1, np.float32)}
    poisoned["w"][7] = bad_value
    contribs = [*honest[:2], Contribution("x", poisoned, sub(poisoned, base), 1), *honest[2:]]
    pipe = build_pipeline(filter_, combine, correct, krum_f=1, multikrum_m=3)
    for _ in range(3):  # several rounds: SybilWall's stored histories must stay finite too
        res = pipe.aggregate(contribs, base)
        assert res.non_finite == ["x"] and res.weights["x"] == 0.0
        assert all(np.isfinite(v).all() for v in res.state.values())
        assert sum(res.weights[c.peer] for c in honest) == pytest.approx(1.0)
        if filter_ in ("sybilwall", "foolsgold", "none", "multikrum"):
            assert sum(res.weights[c.peer] > 0 for c in honest) >= (3 if "krum" in filter_ else 5)
    store = getattr(pipe.filter, "store", None)
    if store is not None:
        assert "x" not in store
        assert all(np.isfinite(r.history).all() for _, r in store.items())


def test_non_finite_own_model_and_all_bad_contributions() -> None:
    pipe = build_pipeline("none", "mean", "vc")
    good = _contrib("a", [1.0, 2.0, 3.0])
    own = {"w": np.array([np.nan, 0, 0], np.float32)}
    res = pipe.aggregate([good], None, own=own, beta=0.5)  # a NaN own model is left out
    np.testing.assert_allclose(res.state["w"], [1.0, 2.0, 3.0], rtol=1e-6)
    bad = _contrib("b", [np.inf, 0.0, 0.0])
    base = {"w": np.zeros(3, np.float32)}
    res = pipe.aggregate([bad], base)  # nothing usable: the base, never the bad model
    assert res.non_finite == ["b"] and res.weights == {"b": 0.0}
    np.testing.assert_array_equal(res.state["w"], base["w"])
    with pytest.raises(AggregationError):
        pipe.aggregate([bad], None)


def test_foolsgold_weights_non_finite_rows_get_zero() -> None:
    h = np.array([[1.0, 0, 0], [0, 1.0, 0], [np.nan, 1, 1], [0, 0, np.inf]])
    w = foolsgold_weights(h)
    assert np.isfinite(w).all() and w[2] == 0.0 and w[3] == 0.0
    np.testing.assert_allclose(w[:2], foolsgold_weights(h[:2]))


def test_huge_finite_float64_models_never_give_non_finite_results() -> None:
    rng = np.random.default_rng(0)
    base = {"w": rng.normal(size=20)}
    contribs = []
    for i in range(4):
        m = {"w": base["w"] + rng.normal(scale=0.1, size=20)}
        contribs.append(Contribution(f"h{i}", m, sub(m, base), 1))
    huge = {"w": np.full(20, 1e300)}
    contribs.append(Contribution("x", huge, {"w": huge["w"] - base["w"]}, 1))  # finite float64
    for f in ("krum", "multikrum", "sybilwall", "none"):
        for c in ("mean", "median"):
            res = build_pipeline(f, c, "vc").aggregate(contribs, base)
            assert res.non_finite == []
            assert all(np.isfinite(v).all() for v in res.state.values()), (f, c)


def test_merge_correlation_measures_shared_base_and_independence() -> None:
    from gossipnode.learn.aggregation import merge_correlation

    rng = np.random.default_rng(1)
    base = rng.normal(size=5000)
    w = np.full(4, 0.25)
    shared = np.stack([base + 0.2 * rng.normal(size=5000) for _ in range(4)])
    rho, v_star = merge_correlation(shared, w)
    assert rho == pytest.approx(1 / 1.04, abs=0.01)  # Var(base) / (Var(base) + Var(update))
    assert v_star == pytest.approx(1.04, rel=0.05)
    rho, _ = merge_correlation(rng.normal(size=(4, 5000)), w)
    assert abs(rho) < 0.03
    assert merge_correlation(shared[:1], np.ones(1))[0] == 1.0  # one input: nothing to correct


def test_default_vc_leaves_shared_base_merges_alone_and_vc_always_does_not() -> None:
    # MoDeST: updates from one base. Their averaging-out is what averaging is for: the default
    # correction must not touch it; the old rule (vc-always) inflates it every round.
    rng = np.random.default_rng(2)
    base = {"w": rng.normal(size=2000).astype(np.float32)}
    cs = [_contrib(f"p{i}", base["w"] + 0.3 * rng.normal(size=2000), base) for i in range(3)]
    plain = build_pipeline("none", "mean", "none").aggregate(cs, base).state["w"]
    default = build_pipeline("none", "mean").aggregate(cs, base).state["w"]  # the default: vc
    always = build_pipeline("none", "mean", "vc-always").aggregate(cs, base).state["w"]
    np.testing.assert_array_equal(default, plain)
    assert always.var() / plain.var() > 1.05  # (1 + 0.09) / (1 + 0.03): the noise restored
    # gossip merge with a shared ancestor (own model in the measurement): no correction either
    own = {"w": base["w"] + 0.3 * rng.normal(size=2000).astype(np.float32)}
    m_plain = build_pipeline("none", "mean", "none").aggregate(cs[:1], None, own=own).state["w"]
    m_vc = build_pipeline("none", "mean", "vc").aggregate(cs[:1], None, own=own).state["w"]
    np.testing.assert_array_equal(m_vc, m_plain)


def test_default_vc_corrects_independent_models_fully_including_the_own_one() -> None:
    cs = _eight_independent_cnn1d()
    own, received = cs[0].model, cs[1:3]
    merged = build_pipeline("none", "mean", "vc").aggregate(received, None, own=own, beta=0.5).state
    plain = build_pipeline("none", "mean", "none").aggregate(received, None, own=own, beta=0.5).state
    for name, t in merged.items():
        if t.size < 1000:
            continue
        # the target is the weighted variance of everything merged: own at beta, received at (1 - beta) / 2
        target = 0.5 * own[name].var() + 0.25 * (received[0].model[name].var() + received[1].model[name].var())
        assert t.var() == pytest.approx(target, rel=1e-3), name
        assert plain[name].var() < 0.5 * target  # 0.25 + 2 * 0.0625 = 0.375 of it without correction


def test_vc_gain_ramp_and_parameters() -> None:
    from gossipnode.learn.aggregation import VarianceCorrection

    vc = VarianceCorrection(max_corr=0.6)
    assert [vc.gain(r) for r in (-0.2, 0.0, 0.3, 0.45, 0.6, 0.9)] == pytest.approx([1, 1, 1, 0.5, 0, 0])
    assert VarianceCorrection().max_corr == 0.3 and VarianceCorrection().gain(float("nan")) == 0.0
    pipe = build_pipeline("none", "mean", "vc")
    pipe.aggregate(_eight_independent_cnn1d(), None)
    d = pipe.describe()["correct"]
    assert d["tensors"] == 8 and d["corrected"] == 4  # cnn1d: 8 weight tensors, 4 of them biases < 100
    assert build_pipeline("none", "mean", "vc", vc_max_corr=0.6).describe()["correct"]["max_corr"] == 0.6
    with pytest.raises(ValueError):
        VarianceCorrection(max_corr=0.0)
    assert build_pipeline("none", "mean", "vc-always").describe()["correct"]["name"] == "vc-always"


def test_adoption_gate_refuses_worse_models_and_cannot_be_ratcheted() -> None:
    from gossipnode.learn.sanity import AdoptionGate
    g = AdoptionGate(0.5)
    assert g.check(0.6, 0.2) is None                 # within the margin of the current model
    # the next model is again 0.4 worse than the one it replaces, but 0.8 worse than the best
    # of the last few: refused, so no sequence of acceptable steps walks the model down
    assert g.check(1.0, 0.6) == "loss 1.000 on local data > current model's 0.200 + margin 0.5"
    assert g.check(0.65, 0.6) is None                # within 0.5 of the best (0.2)
    assert g.check(float("nan"), 0.6) == "loss nan on local data"   # no finite loss: never passes
    assert AdoptionGate(0.0).check(9.0, 0.1) is None  # 0: off
    # the reference forgets: after RECENT better models the old best is gone
    g = AdoptionGate(0.5)
    g.check(0.1, 2.3)
    for _ in range(AdoptionGate.RECENT):
        g.check(0.5, 0.5)
    assert g.reference(0.5) == 0.5


def test_adoption_margin_widens_with_the_skew_of_the_nodes_own_labels() -> None:
    import numpy as np

    from gossipnode.learn.data import partition
    from gossipnode.learn.sanity import AdoptionGate, label_skew, local_margin
    assert abs(label_skew(np.arange(1000) % 10, 10)) < 1e-9            # balanced: the margin as set
    assert abs(label_skew(np.full(50, 3), 10) - np.log(10)) < 1e-9      # one class: + ln C
    assert abs(label_skew(np.array([0, 1] * 50), 10) - np.log(5)) < 1e-9
    assert local_margin(0.0, np.full(50, 3), 10) == 0.0                 # off stays off
    y = np.arange(10_000) % 10
    iid = [local_margin(0.5, y[s], 10) for s in partition(y, 20, "iid", seed=1)]
    skewed = [local_margin(0.5, y[s], 10) for s in partition(y, 20, "dirichlet:0.1", seed=1)]
    assert max(iid) < 0.55 and min(skewed) > 1.0, (iid, skewed)
    # a 1.5-nat honest swing on one-class data passes there, and is refused on balanced data
    assert AdoptionGate(local_margin(0.5, np.full(50, 3), 10)).check(1.7, 0.2) is None
    assert AdoptionGate(local_margin(0.5, y, 10)).check(1.7, 0.2) is not None


def test_self_check_never_falls_back_to_round_copies() -> None:
    """The aggregator's self-check (learn/aggregation/rounds.py): when the filtered result fails
    the probe, its fallbacks must not bring back the copies the filter zeroed. A backdoor keeps
    clean accuracy, so each copy passes the probe alone, and the unfiltered mean of the copies
    was adopted (RESULTS 13.2). With --round-twins off the old fallback stays."""
    from gossipnode.learn.aggregation.rounds import self_check
    from gossipnode.learn.sanity import AdoptionGate
    rng = np.random.default_rng(3)
    dim = 200
    base = {"w": np.zeros(dim, np.float32)}
    poison = rng.normal(size=dim)

    def probe(st: State) -> float:
        w = np.asarray(st["w"], np.float64)
        n = np.linalg.norm(w)
        return 1.0 if n == 0 else (0.0 if w @ poison / (n * np.linalg.norm(poison)) > 0.9 else 10.0)

    contribs = [_contrib(f"h{i}", rng.normal(size=dim), rnd=2) for i in range(3)] + \
        [_contrib(f"s{i}", poison, rnd=2) for i in range(3)]
    for twins, fallback in ((True, "current"), (False, "unfiltered")):
        pipe = build_pipeline("sybilwall", self_id="me", round_twins=twins)
        res = pipe.aggregate(contribs, base)
        out, info = self_check(pipe, probe, AdoptionGate(0.5), res.state, contribs, base, base)
        assert info["fallback"] == fallback, info
        if twins:
            assert info["self_check"]["copies"] == 3 and probe(out) == 1.0   # the current model
        else:
            assert probe(out) == 0.0   # the copies' model: what the attacker wanted


def test_round_twins_only_in_aggregations_not_merges() -> None:
    """In a merge (gossip, D-PSGD), `received - own` of two peers that agree with each other but
    not with us is alike legitimately: no twin rule there, the paper's weights only."""
    dim = 300
    rng = np.random.default_rng(4)
    own = {"w": np.zeros(dim, np.float32)}
    agreed = rng.normal(size=dim)
    contribs = [_contrib("a", agreed), _contrib("b", agreed + 1e-4 * rng.normal(size=dim))]
    earlier = {p: (rng.normal(size=dim) * 20).astype(np.float32) for p in ("a", "b")}

    def pipe():   # histories that differ: the paper's weights keep both
        p = build_pipeline("sybilwall", self_id="me", correct="none")
        for peer, h in earlier.items():
            p.filter.store.record_update(peer, 1, h)
        return p
    merged = pipe().aggregate(contribs, None, own=own, beta=0.5)
    assert merged.zeroed == [] and min(merged.scores.values()) > 0
    # the same two as a round's updates from one base: copies, weight 0
    assert sorted(pipe().aggregate(contribs, own).zeroed) == ["a", "b"]


def test_twin_peers_in_slices_over_several_tensors(monkeypatch) -> None:
    """Cosines come from float64 dot products a slice of a tensor at a time (no flat float64
    copy of every update): the same answer with slices smaller than a tensor."""
    from gossipnode.learn.aggregation import filters
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(30, 7)).astype(np.float32), rng.normal(size=11).astype(np.float32)

    def c(peer: str, w, bias) -> Contribution:
        m = {"l.weight": np.asarray(w, np.float32), "l.bias": np.asarray(bias, np.float32)}
        return Contribution(peer, m, m, 1)
    contribs = [c("x", a, b), c("y", a * 3, b * 3), c("z", rng.normal(size=(30, 7)), b), c("o", a, -b)]
    for chunk in (1 << 20, 16, 5):
        monkeypatch.setattr(filters, "_GRAM_CHUNK", chunk)
        assert filters.twin_peers(contribs) == {"x", "y"}   # a scaled copy is a copy; "o" differs in one tensor
    zero = {"l.weight": np.zeros((30, 7), np.float32), "l.bias": np.zeros(11, np.float32)}
    assert filters.twin_peers([Contribution("p", zero, zero, 1), Contribution("q", zero, zero, 1)]) == set()
