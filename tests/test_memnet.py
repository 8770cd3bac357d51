"""Real nodes in one event loop over the memory transport (tests/memnet.py): a network learns,
and a member's bad model frames are rejected with their reason (missing_base, bad_delta,
unsolicited_model), counted, and change nothing, while the node and the network go on."""
from __future__ import annotations

import numpy as np
import pytest

from gossipnode.core.messages import ModelData, ModelKind, ModelMsg, ModelRequest, Ping, Pong, RawTensor
from gossipnode.wire.tensors import from_raw, make_delta, model_hash, to_raw

from memnet import MemNet, Node

# Honest nodes reject nothing but what honest timing explains (see test_integration_http.py),
# and here, where rounds take about 50 ms, a base fetch (MODEL_REQUEST) beyond a peer's budget
# of 2 per --ping-timeout (sized for rounds of seconds) is `rate_limited`. A node's own-data
# check can refuse the network's model (`worse_model`); on near-balanced shards an aggregator
# then also leaves out the updates trained from such a model (`unfit_base`, SPEC 15): the same
# refusal a round later (seen in CI on 2-class shards, 19 on one node, before the rule was
# limited to balanced labels).
HONEST_REJECTIONS = {"worse_model", "unfit_base", "round_out_of_range", "rate_limited"}
# A node that stays in its bootstrap phase: no rounds, its store and core do not move.
QUIET = dict(bootstrap_wait=600.0, bootstrap_timeout=600.0)


def _shifted(model: tuple[RawTensor, ...], by: float) -> tuple[RawTensor, ...]:
    """The model with `by` added to every float tensor (a different, valid model of the same shape)."""
    return tuple(to_raw(t.name, from_raw(t) + np.float32(by)) if t.dtype == "<f4" else t for t in model)


def _current(node: Node) -> tuple[bytes, tuple[RawTensor, ...]]:
    h = bytes.fromhex(node.status()["model_hash"])
    model = node.store.get(h)
    assert model is not None
    return h, model


def _rejected(node: Node) -> dict[str, int]:
    return node.status()["messages_rejected"]


# ---- a network learns --------------------------------------------------------------------------


async def test_six_nodes_learn_what_no_node_can_learn_alone(tmp_path) -> None:
    # 6 classes; node i holds classes i and i+1 (mod 6): no two nodes hold the same pair (two
    # that did would look like Sybils to SybilWall). Every node's test split has all 6.
    net = MemNet(tmp_path, 6, sample_size=4, classes=6, classes_per_node=2)
    # Control: each node trained alone (5 epochs on its own shard) stays below 0.5 (measured
    # 0.34-0.42; chance 1/6), so the bar below is only met by combining the others' models.
    for i in range(len(net.nodes)):
        before, after = net.train_alone(i, epochs=5)
        assert before < 0.25 and after < 0.5, (i, before, after)
    async with net:
        await net.until(net.all_know_each_other, 10, "all peers known")
        # Measured: 0.9 on every node after 6-19 rounds (1-3 s); a few runs in 20 took 40.
        await net.until(lambda: all(a >= 0.9 for a in net.best_accuracies()), 45,
                        "an evaluation >= 0.9 on every node")
        await net.until(lambda: all(n.core.round >= 10 for n in net.nodes), 30, "10 rounds everywhere")
        st = [n.status() for n in net.nodes]
    # every node trained (4 of 6 per round), and one aggregation per round since round 2
    assert all(s["rounds_trained"] >= 1 for s in st), net.summary()
    assert sum(s["rounds_aggregated"] for s in st) >= 9, net.summary()
    assert all(set(s["messages_rejected"]) <= HONEST_REJECTIONS for s in st), net.summary()
    assert all(s["addresses"] == [net.address(i)] for i, s in enumerate(st))


# ---- bad frames from a member, on a quiet node ----------------------------------------------------


@pytest.fixture
async def quiet(tmp_path):
    """One node in its bootstrap phase and a puppet member of its view."""
    net = MemNet(tmp_path, 1, **QUIET)
    async with net:
        puppet = net.puppet()
        await puppet.join(net.nodes[0])
        yield net, net.nodes[0], puppet


def _delta_msg(base: tuple[RawTensor, ...], by: float = 0.01) -> tuple[ModelMsg, bytes]:
    """A TRAINED delta against `base`: (message, the model's hash once applied)."""
    delta, h = make_delta(_shifted(base, by), base)
    return ModelMsg(1, ModelKind.TRAINED, h, (), base=model_hash(base), tensors=delta), h


async def test_missing_base_rejected_after_asking_the_sender(quiet) -> None:
    net, node, puppet = quiet
    _, cur = _current(node)
    other = _shifted(cur, 0.5)                       # a base the node does not hold
    msg, h = _delta_msg(other)
    # The frame is taken while the base is fetched from its sender, which does not hold it either.
    assert await puppet.send(node, msg) is None
    await net.until(lambda: _rejected(node).get("missing_base") == 1, 5, "missing_base")
    assert puppet.of_type(ModelRequest) == [ModelRequest(model_hash(other))]
    assert puppet.of_type(ModelData) == [] and puppet.answers[-1] is None   # our "not held" was taken
    assert h not in node.store and model_hash(other) not in node.store
    # A sender that never answers: the same reason once the fetch times out (about 2 ping timeouts).
    puppet.serve_models = False
    msg2, h2 = _delta_msg(_shifted(cur, 0.7))
    assert await puppet.send(node, msg2) is None
    await net.until(lambda: _rejected(node).get("missing_base") == 2, 10, "missing_base after a timeout")
    assert h2 not in node.store
    # Control: the same kind of delta against a base the sender serves is fetched and taken.
    puppet.serve_models = True
    served = _shifted(cur, 0.9)
    puppet.models[model_hash(served)] = served
    msg3, h3 = _delta_msg(served)
    answers = len(puppet.answers)
    assert await puppet.send(node, msg3) is None
    await net.until(lambda: h3 in node.store, 5, "the delta applied to the fetched base")
    assert model_hash(served) in node.store and puppet.answers[answers:] == [None]
    assert _rejected(node) == {"missing_base": 2}, _rejected(node)
    # the node keeps answering
    pongs = len(puppet.of_type(Pong))
    assert await puppet.send(node, Ping(0, 12345)) is None
    await net.until(lambda: any(p.nonce == 12345 for p in puppet.of_type(Pong)[pongs:]), 5, "a pong")


async def test_bad_delta_rejected(quiet) -> None:
    net, node, puppet = quiet
    base_h, base = _current(node)
    good, h = _delta_msg(base)
    assert good.base == base_h
    d = good.tensors
    w = from_raw(d[0])
    assert w.ndim == 2 and w.shape[0] != w.shape[1]   # logreg's weight: (classes, features)
    cases = {
        "wrong shape": (to_raw(d[0].name, np.zeros(w.size + 1, np.float32)),) + d[1:],
        "transposed": (to_raw(d[0].name, np.ascontiguousarray(w.T)),) + d[1:],
        "wrong name": (to_raw("not." + d[0].name, w),) + d[1:],
        "one tensor short": d[1:],
        "one tensor more": d + (to_raw("extra", np.zeros(3, np.float32)),),
        "wrong order": tuple(reversed(d)),
    }
    for n, (what, tensors) in enumerate(cases.items(), 1):
        bad = ModelMsg(1, ModelKind.TRAINED, h, (), base=base_h, tensors=tensors)
        assert await puppet.send(node, bad) == "bad_delta", what
        assert _rejected(node) == {"bad_delta": n}, (what, _rejected(node))
    assert n == 6
    assert h not in node.store and node.core.agg_idx == 0 and node.core.round == 0
    # Control: the well-formed delta against the same base is applied and stored.
    assert await puppet.send(node, good) is None
    assert h in node.store
    assert _rejected(node) == {"bad_delta": n}


async def test_unsolicited_model_rejected(quiet) -> None:
    net, node, puppet = quiet
    _, cur = _current(node)
    other = _shifted(cur, 0.3)
    h = model_hash(other)
    assert await puppet.send(node, ModelData(h, other)) == "unsolicited_model"
    assert await puppet.send(node, ModelData(h, ())) == "unsolicited_model"   # a "not held" nobody asked for
    stranger = net.puppet("stranger")   # not a member: the same answer, before anything else
    assert await stranger.send(node, ModelData(h, other)) == "unsolicited_model"
    assert h not in node.store
    assert _rejected(node) == {"unsolicited_model": 3}
    # Control: the same data is taken when the node asked for it (a delta's base) ...
    puppet.models[h] = other
    msg, h2 = _delta_msg(other)
    assert await puppet.send(node, msg) is None
    await net.until(lambda: h2 in node.store, 5, "the fetched base used")
    assert puppet.answers[-1] is None and h in node.store
    # ... and only once: the same answer again is unsolicited.
    assert await puppet.send(node, ModelData(h, other)) == "unsolicited_model"
    assert _rejected(node) == {"unsolicited_model": 4}


# ---- bad frames in a running network ---------------------------------------------------------------


async def test_network_goes_on_after_a_member_sends_bad_models(tmp_path) -> None:
    # every node in every sample: no honest base fetches, so each count below is the puppet's
    net = MemNet(tmp_path, 3, sample_size=3)
    async with net:
        # past round tau: the puppet's round-0 record is not active, it is never sampled
        tau = net.nodes[0].cfg.inactivity_threshold
        await net.until(lambda: all(n.core.round > tau + 1 for n in net.nodes), 15, f"{tau + 2} rounds")
        puppet = net.puppet()
        for node in net.nodes:
            await puppet.join(node)
        for node in net.nodes:
            base_h, base = _current(node)
            good, h = _delta_msg(base)
            k = max(1, node.core.round)
            short = ModelMsg(k, ModelKind.TRAINED, h, (), base=base_h, tensors=good.tensors[1:])
            assert await puppet.send(node, short) == "bad_delta"
            assert await puppet.send(node, ModelData(h, base)) == "unsolicited_model"
            missing, _ = _delta_msg(_shifted(base, 0.5))
            assert await puppet.send(node, ModelMsg(k, ModelKind.TRAINED, missing.model, (), missing.base,
                                                    missing.tensors)) is None
        for node in net.nodes:
            await net.until(lambda node=node: _rejected(node).get("missing_base") == 1, 5, "missing_base")
        await puppet.leave(net.nodes)
        r0 = max(n.core.round for n in net.nodes)
        await net.until(lambda: all(n.core.round >= r0 + 3 for n in net.nodes), 30, "3 more rounds")
        for node in net.nodes:
            rej = _rejected(node)
            assert rej.get("bad_delta") == 1 and rej.get("unsolicited_model") == 1, rej
            assert rej["missing_base"] == 1, rej
            assert set(rej) <= HONEST_REJECTIONS | {"bad_delta", "unsolicited_model", "missing_base"}, rej
        # the puppet's signed LEAVE reached every node: it is no member anywhere now
        assert not any(n.core.is_member(puppet.pk) for n in net.nodes)


# ---- crashes -----------------------------------------------------------------------------------


async def test_survivors_go_on_after_most_nodes_crash(tmp_path) -> None:
    """3 of 5 crash (no LEAVE): the two left find out through unanswered pings and keep going."""
    net = MemNet(tmp_path, 5, sample_size=4, success_fraction=0.75, inactivity_threshold=4,
                 aggregation_timeout=0.5)
    async with net:
        await net.until(lambda: all(n.core.round >= 5 for n in net.nodes), 20, "5 rounds")
        for i in (0, 1, 2):
            await net.crash(i)
        survivors = net.nodes[3:]
        r0 = max(n.core.round for n in survivors)
        before = [n.status() for n in survivors]
        took = await net.until(lambda: all(n.core.round >= r0 + 5 for n in survivors), 60,
                               "5 more rounds on the survivors")
        after = [n.status() for n in survivors]
    # they found out (a send to a crashed node failed, or the crashed ones left their active sets),
    # and both trained in most of the 5 rounds (measured 4-7 in 10 runs; below 4 once in 20). (A
    # survivor whose walks met only the other survivor need not have tried one; CI saw that twice.)
    tried = sum(a["send_failures"] for a in after) > sum(b["send_failures"] for b in before)
    assert tried or all(a["peers_active"] < 4 for a in after), after
    trained = [a["rounds_trained"] - b["rounds_trained"] for a, b in zip(after, before, strict=True)]
    print(f"5 rounds after the crash in {took:.1f} s; trained", trained)
    assert all(t >= 3 for t in trained), trained
