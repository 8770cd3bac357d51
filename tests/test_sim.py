"""The simulator: cross-check against the core harness, determinism, scenarios, short experiments."""
from __future__ import annotations

import json

import numpy as np
import pytest
from core_harness import CoreNet, pk_of

from gossipnode.core.config import ModestConfig
from gossipnode.learn import data as ldata
from gossipnode.sim import SimConfig, make_engine, run_sim
from gossipnode.sim.config import parse_churn
from gossipnode.sim.modest import ModestSim


@pytest.fixture(scope="module")
def small_data() -> ldata.Dataset:
    return ldata.load_mnist1d(num_samples=4000)


def cfg(**kw) -> SimConfig:
    base = {"nodes": 20, "rounds": 6, "mnist1d_samples": 4000, "sample_size": 5, "eval_samples": 500}
    base.update(kw)
    return SimConfig(**base)


class HarnessKeys(ModestSim):
    """Same public keys as tests/core_harness.py, so both compute the same samples."""

    def make_pk(self, i: int) -> bytes:
        return pk_of(i)


def test_same_samples_and_aggregates_as_the_core_harness(small_data) -> None:
    """The engine drives the unmodified ModestCore: with the harness's timing (zero transfer time,
    10 ms latency, 1 s training, 0.1 s aggregation) every round has the same trainers, aggregator
    and contributors as tests/core_harness.py's zero-I/O scheduling of the same cores."""
    n, s, rounds = 20, 5, 8
    net = CoreNet(n, ModestConfig(sample_size=s), latency=0.01, train_time=1.0, agg_time=0.1)
    net.start()
    shard = len(small_data.y) // n
    c = cfg(nodes=n, sample_size=s, rounds=rounds, latency="const:0.01", bandwidth="const:1e15",
            compute=f"const:{shard}", agg_time=0.1 / s, extra={"keep_logs": True})
    sim = HarnessKeys(c, small_data)
    sim.run()
    net.run_until(sim.now)
    idx = {pk_of(i): i for i in range(n)}
    harness_train = sorted((k, idx[pk]) for pk, ks in net.trainings.items() for k in ks if k <= rounds)
    sim_train = sorted((k, i) for k, i in sim.train_log if k <= rounds)
    assert sim_train == harness_train
    harness_agg = sorted((k, idx[pk], sorted(idx[p] for p, _ in cs))
                         for k, lst in net.aggregations.items() for pk, cs in lst if k <= rounds)
    sim_agg = sorted((a["round"], a["aggregator"], a["contributors"]) for a in sim.agg_log
                     if a["round"] <= rounds)
    assert sim_agg == harness_agg
    assert len(sim_agg) >= rounds - 1


def test_aggregate_equals_the_pipeline_mean_of_the_contributions(small_data) -> None:
    sim = make_engine(cfg(rounds=2, extra={"keep_logs": True}), small_data)
    sim.run()
    # one more aggregation by hand: FedAvg of two trained models from the same base
    a = sim.train(0, sim.initial)
    b = sim.train(1, sim.initial)
    h = sim.aggregate(2, 3, [(0, a), (1, b)])
    for k, v in sim.models[h].items():
        np.testing.assert_allclose(v, (sim.models[a][k] + sim.models[b][k]) / 2, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("protocol", ["modest", "fl", "dpsgd", "gossip"])
def test_deterministic_with_a_fixed_seed(protocol, small_data) -> None:
    kw = {"protocol": protocol, "rounds": 3, "gossip_interval": 1.0, "nodes": 12}
    r1 = run_sim(cfg(**kw), data=small_data)
    r2 = run_sim(cfg(**kw), data=small_data)
    assert json.dumps(r1["series"]) == json.dumps(r2["series"])
    assert r1["summary"]["bytes_total"] == r2["summary"]["bytes_total"] > 0
    r3 = run_sim(cfg(seed=1, **kw), data=small_data)
    assert json.dumps(r3["series"]) != json.dumps(r1["series"])


def test_modest_learns_and_counts_bytes(small_data) -> None:
    r = run_sim(cfg(rounds=15, nodes=20, local_epochs=2), data=small_data)
    s, series = r["summary"], r["series"]
    assert s["rounds_completed"] == 15
    assert series[-1]["acc_mean"] > series[0]["acc_mean"] + 0.05
    # every trained model is one delta frame, every aggregated model one full frame; views ride along
    assert s["message_bytes"]["model_trained"] >= s["messages"]["model_trained"] * s["model_bytes"]
    assert s["bytes_total"] == sum(s["message_bytes"].values())


def test_churn_crashes_and_joins_keep_rounds_going(small_data) -> None:
    c = cfg(nodes=20, rounds=None, duration=120.0, success_fraction=0.8, ping_timeout=2.0,
            inactivity_threshold=20, churn="crash:2:10:20:6,join:2:10:25:3")
    r = run_sim(c, data=small_data)
    s = r["summary"]
    assert s["churn_events"] == {"crash": 12, "join": 6}
    assert s["active_nodes_end"] == 20 - 12 + 6
    after = [x for x in r["series"] if x["t"] > 80]
    assert after and after[-1]["round"] > after[0]["round"]   # rounds still complete at 60 % crashed


@pytest.mark.parametrize("attack", ["label-flip", "backdoor"])
def test_sybil_attack_scenarios_run(attack, small_data) -> None:
    r = run_sim(cfg(protocol="dpsgd", nodes=10, rounds=3, attack=attack, sybils=0.5, topology="ring",
                    filter="sybilwall"), data=small_data)
    s = r["summary"]
    assert s["sybils"] == 5 and s["messages"]["model_sybil"] > 0 and s["messages"]["history"] > 0
    # the last round's rate; the attack shows, and SybilWall keeps it under half (measured
    # 0.08 label-flip, 0.17 backdoor; seed 1: 0.18, 0.34)
    assert s["final_attack_rate"] == r["series"][-1]["attack_rate"]
    assert 0.0 < s["final_attack_rate"] < 0.5
    r = run_sim(cfg(nodes=10, rounds=3, attack=attack, sybils=1.0), data=small_data)   # MoDeST
    # measured 0.01 label-flip, 0.25 backdoor (seed 1: 0.11, 0.01)
    assert r["summary"]["final_attack_rate"] == r["series"][-1]["attack_rate"]
    assert 0.0 <= r["summary"]["final_attack_rate"] < 0.5


def test_rgg_topology_is_the_papers_graph_and_sybils_sit_next_to_their_nearest_nodes(small_data) -> None:
    import numpy as np

    from gossipnode.sim.config import parse_topology
    from gossipnode.sim.topology import nearest_links, rgg
    assert parse_topology("rgg:0.2:7") == ("rgg", 7, 0.2)
    for bad in ("rgg", "rgg:0.2", "rgg:x:7", "rgg:0:7", "rgg:0.2:0"):
        with pytest.raises(ValueError):
            parse_topology(bad)
    for seed in range(3):
        nbrs, pos = rgg(99, 0.2, 7, np.random.default_rng(seed))
        assert all(i not in nb and all(i in nbrs[j] for j in nb) for i, nb in enumerate(nbrs))
        seen, todo = {0}, [0]                      # connected
        while todo:
            todo += [j for j in nbrs[todo.pop()] if j not in seen and not seen.add(j)]
        assert len(seen) == 99
        deg = [len(nb) for nb in nbrs]
        assert max(deg) <= 8 and 5.5 < sum(deg) / 99 <= 7      # measured mean 6.16-6.20
        far = [np.linalg.norm(pos[i] - pos[j]) for i, nb in enumerate(nbrs) for j in nb]
        assert sum(d > 0.2 for d in far) <= 2 * 4              # only the joins of components
    links = nearest_links(pos, 3, 7, np.random.default_rng(5))
    p = np.random.default_rng(5).uniform(size=(3, 2))
    for q, honest in zip(p, links, strict=True):
        d = ((pos - q) ** 2).sum(-1)
        assert len(honest) == 7 and max(d[honest]) <= min(np.delete(d, honest))
    r = run_sim(cfg(protocol="dpsgd", nodes=12, rounds=2, attack="label-flip", sybils=0.25,
                    sybil_links=3, topology="rgg:0.5:4", filter="sybilwall"), data=small_data)
    assert r["summary"]["sybils"] == 3 and r["summary"]["messages"]["model_sybil"] > 0


def test_global_history_scope_is_one_store_that_follows_identities(small_data) -> None:
    """history_scope=global (an upper bound, RESULTS 13.3): every aggregator reads and extends the
    same store, so an identity's history sums its updates wherever it was aggregated; with the
    full history records (--history-sketch 0) each aggregator holds only what it saw and what
    gossip brought; with sketch tables (the default) the node stores follow identities too."""
    from gossipnode.sim.run import make_engine
    runs = {}
    for scope, dims in (("node", 0), ("global", 0), ("node", 128)):
        eng = make_engine(cfg(nodes=12, rounds=6, sample_size=4, attack="backdoor", sybils=0.25,
                              history_scope=scope, history_sketch=dims), data=small_data)
        eng.run()
        stores = {id(p.filter.store): p.filter.store for p in eng._pipelines.values()}
        runs[scope, dims] = (eng, stores)
    eng, stores = runs["global", 0]
    assert len(stores) == 1 and len(eng._pipelines) > 1
    (store,) = stores.values()
    assert len(store) >= 6                       # most of the 15 identities, in one place
    _, local = runs["node", 0]
    assert len(local) == len(runs["node", 0][0]._pipelines) > 1
    assert max(len(s) for s in local.values()) < len(store)
    eng, sketched = runs["node", 128]
    assert len(sketched) == len(eng._pipelines) > 1 and all(s.sketch_dims == 128 for s in sketched.values())
    assert max(len(s) for s in sketched.values()) >= len(store) > max(len(s) for s in local.values())
    with pytest.raises(ValueError):
        SimConfig(history_scope="everywhere")


def test_gossip_with_independent_init_and_variance_correction(small_data) -> None:
    r = run_sim(cfg(protocol="gossip", nodes=10, rounds=4, gossip_interval=2.0, init="independent",
                    correct="vc"), data=small_data)
    assert r["summary"]["messages"]["model_gossip"] >= 10 * 3
    assert r["series"][-1]["evaluated"] == 10


def test_cifar_shaped_input_with_gnlenet(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny_cifar.npz"
    np.savez(path, x=rng.random((60, 3, 32, 32), dtype=np.float32), y=rng.integers(0, 10, 60),
             x_test=rng.random((20, 3, 32, 32), dtype=np.float32), y_test=rng.integers(0, 10, 20))
    r = run_sim(SimConfig(nodes=4, rounds=2, dataset=str(path), model="gnlenet", sample_size=2,
                          attack="backdoor", sybils=0.5))
    assert r["summary"]["rounds_completed"] == 2
    assert r["summary"]["model_bytes"] > 300_000   # GN-LeNet, ~89k float32 parameters


def test_cli_writes_json_and_plot(tmp_path) -> None:
    from gossipnode.cli.entry import main
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["sim", "--protocol", "fl", "--nodes", "8", "--rounds", "2", "--mnist1d-samples", "4000",
                 "--json-out", str(out), "--plot", str(png), "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert res["summary"]["rounds_completed"] == 2 and png.stat().st_size > 1000
    assert main(["sim", "--protocol", "nope", "--quiet"]) == 2


def test_churn_spec_parsing() -> None:
    steps = parse_churn("crash:5:60:300:16,join:5:60:330:4")
    assert [(s.kind, s.count, s.times) for s in steps] == [("crash", 5, 16), ("join", 5, 4)]
    with pytest.raises(ValueError):
        parse_churn("crash:5:60")


# Fields both configurations have whose defaults differ on purpose (reason each).
DELIBERATE = {
    "rounds": "the daemon runs until stopped (0); a simulation needs an end (50)",
    "gossip_interval": "virtual seconds in the simulator (60 s, 5 s of training per round) vs wall seconds",
    "stall_timeout": "the daemon's stall restart is on; the simulator runs the paper's protocol (off)",
    "sybils": "daemon: identities in this attacker process; simulator: identities per honest node (phi)",
}


def test_sim_defaults_are_the_daemons() -> None:
    """`gossipnode sim` runs what `gossipnode start` runs: same pipeline, same parameters, same flags."""
    import argparse
    from dataclasses import fields

    from gossipnode.cli.entry import build_parser
    from gossipnode.runtime.flags import NODE_FLAGS
    from gossipnode.runtime.config import NodeConfig, load_config
    from gossipnode.learn.attacks import canonical_attack
    from gossipnode.sim.cli import config_from_args

    daemon = load_config(env={})
    sim = config_from_args(build_parser().parse_args(["sim"]))
    assert sim == SimConfig()
    shared = ({f.name for f in fields(NodeConfig)} & {f.name for f in fields(SimConfig)}) - {"extra"}
    for name in ("filter", "combine", "correct", "beta", "krum_f", "multikrum_m", "trim_beta", "vc_eps",
                 "vc_rho", "vc_max_corr", "eval_attack"):
        assert name in shared, name
    for name in sorted(shared - set(DELIBERATE)):
        d, s = getattr(daemon, name), getattr(sim, name)
        if name == "attack":
            d, s = canonical_attack(d), canonical_attack(s)
        assert d == s, f"{name}: daemon {d!r}, sim {s!r}"
    assert (sim.filter, sim.combine, sim.correct) == ("sybilwall", "mean", "vc")
    # same flag names: every shared field is --the-same-flag in both parsers
    sim_flags = {a.dest: a.option_strings for a in build_parser()._subparsers._group_actions[0]
                 .choices["sim"]._actions if isinstance(a, argparse.Action)}
    node_flags = {name: flag for flag, name, _, _ in NODE_FLAGS}
    for name in shared:
        assert node_flags[name] in sim_flags[name], name
    # the daemon's --independent-init works in the simulator too
    assert config_from_args(build_parser().parse_args(["sim", "--independent-init"])).init == "independent"


def test_bool_flags_parse_false(capsys) -> None:
    """`--keepalive false` once meant True (bool("false")): every benchmark of it measured keep-alive."""
    from gossipnode.cli.entry import build_parser
    from gossipnode.sim.cli import config_from_args

    def cfg(*a):
        return config_from_args(build_parser().parse_args(["sim", *a]))

    assert cfg("--keepalive", "false").keepalive is False and cfg("--prewalk", "0").prewalk is False
    assert cfg("--keepalive", "True").keepalive is True and cfg().keepalive is True
    with pytest.raises(SystemExit):
        cfg("--keepalive", "maybe")
    assert "expected true or false" in capsys.readouterr().err


@pytest.mark.parametrize("spelling", ["labelflip", "label-flip", "label_flip", "Label-Flip"])
def test_one_attack_spelling(spelling) -> None:
    from gossipnode.runtime.config import load_config

    assert SimConfig(attack=spelling, sybils=0.5).attack == "label-flip"
    assert load_config(env={}, overrides={"attack": spelling}).attack == "label-flip"
    assert load_config(env={}, overrides={"eval_attack": f"backdoor,{spelling}"}).eval_attack == "backdoor,label-flip"
    assert SimConfig(attack="").attack == "none"
    with pytest.raises(ValueError):
        SimConfig(attack="flip")
    with pytest.raises(ValueError):
        load_config(env={}, overrides={"attack": "flip"})


def test_default_correction_never_acts_on_shared_base_runs(small_data) -> None:
    """MoDeST and same-init gossip: the default vc finds the merged models correlated and corrects
    nothing, so the run is bit-identical to --correct none; independent inits are corrected."""
    for kw in ({"protocol": "modest", "nodes": 3, "sample_size": 3, "partition": "dirichlet:0.1"},
               {"protocol": "gossip", "nodes": 4, "gossip_interval": 2.0}):
        d = run_sim(cfg(rounds=4, **kw), data=small_data)
        n = run_sim(cfg(rounds=4, correct="none", **kw), data=small_data)
        assert d["summary"]["vc_corrected"] == 0, kw
        assert json.dumps(d["series"]) == json.dumps(n["series"]), kw
    ind = run_sim(cfg(protocol="gossip", nodes=4, rounds=3, gossip_interval=2.0, init="independent"),
                  data=small_data)
    assert ind["summary"]["vc_corrected"] > 0


def test_partition_churn_cuts_and_heals_and_the_parts_merge(small_data) -> None:
    """--churn partition:3/3:START:DURATION: both parts keep going while cut (tau 5 < the rounds
    apart), and after the heal the core merges the lineages (SPEC 15.5)."""
    steps = parse_churn("partition:3/3:40:120")
    assert steps[0].kind == "partition" and steps[0].groups == (3, 3) and steps[0].every == 120
    with pytest.raises(ValueError):
        parse_churn("partition:3:40:120")
    c = cfg(nodes=6, sample_size=3, rounds=None, duration=260.0, eval_every=20.0, ping_timeout=2.0,
            inactivity_threshold=5, aggregation_timeout=6.0, round_timeout=15.0, churn="partition:3/3:40:120")
    s = run_sim(c, data=small_data)["summary"]
    p = s["partitions"][0]
    assert s["partition_dropped"] > 0 and p["healed_at"] == 160.0
    cut, healed = p["part_rounds_at_cut"], p["part_rounds_at_heal"]
    assert len(healed) == 2 and all(h >= c + 10 for c, h in zip(cut, healed, strict=True)), p
    assert s["protocol_events"].get("merge", 0) >= 1
    assert s["active_nodes_end"] == 6
