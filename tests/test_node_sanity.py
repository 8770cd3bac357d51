"""Model sanity before use (issue 9): a NaN/inf or blown-up model is rejected with its reason,
counted, and never stored, adopted or aggregated; the node's model and accuracy stay intact."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest

from gossipnode.runtime.config import NodeConfig
from gossipnode.core.messages import ModelData, ModelKind, ModelMsg, Status
from gossipnode.learn.sanity import (
    DEFAULT_MAX_UPDATE_NORM,
    DEGENERATE_MODEL,
    WORSE_MODEL,
    NON_FINITE,
    NORM_OUT_OF_RANGE,
    check_model,
    update_ratio,
)
from gossipnode.runtime.node import Node
from gossipnode.wire.codec import encode
from gossipnode.wire.identity import Identity
from gossipnode.wire.tensors import from_raw, make_delta, model_hash, to_raw

from conftest import free_ports, wait_for

# A role check (another part of issue 9) may reject a stranger's model first; either way the
# model must never be used.
ROLE_REASONS = {"not_member", "not_in_sample", "round_out_of_range", "unsolicited_model"}


def _scaled(model, fn):
    """The model with fn applied to every float tensor (buffers and ints kept)."""
    return tuple(to_raw(t.name, fn(from_raw(t).astype(np.float32)).astype(t.dtype))
                 if t.dtype in ("<f4", "<f2", "<f8") else t for t in model)


def _nan_first(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flat[0] = np.nan
    return a


# ---- the pure check --------------------------------------------------------------------------


def test_check_model_reasons_and_ratio() -> None:
    ref = {"w": np.ones(4, np.float32), "bn.running_mean": np.zeros(2, np.float32), "n": np.array(3)}
    assert check_model(ref, ref) is None
    assert update_ratio({**ref, "w": ref["w"] * 3}, ref) == pytest.approx(2.0, rel=1e-5)
    assert check_model({**ref, "w": np.array([1, np.nan, 1, 1], np.float32)}, ref)[0] == NON_FINITE
    # buffers must be finite too, but do not count towards the norm
    assert check_model({**ref, "bn.running_mean": np.array([np.inf, 0], np.float32)}, ref)[0] == NON_FINITE
    assert check_model({**ref, "bn.running_mean": np.full(2, 1e6, np.float32)}, ref) is None
    huge = {**ref, "w": np.full(4, 1e30, np.float32)}
    assert check_model(huge, ref)[0] == NORM_OUT_OF_RANGE
    assert check_model(huge, ref, max_ratio=0) is None  # 0: off
    assert check_model(huge, None) is None  # no reference: finiteness only
    assert check_model({**ref, "w": ref["w"] * 50}, ref, max_ratio=100) is None
    assert NodeConfig().max_update_norm == DEFAULT_MAX_UPDATE_NORM
    from gossipnode.runtime.config import load_config
    from gossipnode.sim import SimConfig
    assert SimConfig().max_update_norm == DEFAULT_MAX_UPDATE_NORM
    assert load_config(env={"GOSSIPNODE_MAX_UPDATE_NORM": "0"}).max_update_norm == 0.0
    with pytest.raises(ValueError):
        load_config(env={}, overrides={"max_update_norm": -1.0})


# ---- in-process node: node._receive_model and MODEL_DATA -------------------------------------


@pytest.fixture
async def node(tmp_path):
    (port,) = free_ports(1)
    cfg = NodeConfig(port=port, state_dir=str(tmp_path / "n"), mnist1d_samples=1000, network_id="t",
                     bootstrap_wait=600, bootstrap_timeout=600, max_message_mb=4.0)
    n = Node(cfg)
    await n.start()
    yield n
    await n.stop(graceful=False)


def _snapshot(n: Node):
    return (n.current, n.core.round, n.core.agg_idx, n.core.train_idx, len(n.store),
            len(n.pipeline.filter.store))


async def test_receive_model_rejects_non_finite_and_blown_up_models(node: Node) -> None:
    peer = Identity.generate().public_key
    current = node.store.get(node.current)
    before = _snapshot(node)
    # a TRAINED delta with one NaN against our current model (its base)
    trained = _scaled(current, lambda a: _nan_first(a + 0.01))
    delta, h = make_delta(trained, current)
    msg = ModelMsg(1, ModelKind.TRAINED, h, (), node.current, delta)
    assert await node._receive_model(peer, msg) == NON_FINITE
    # an AGGREGATED model (whole) blown up to 1e30, and one with +inf
    for fn, reason in ((lambda a: np.full_like(a, 1e30), DEGENERATE_MODEL),
                       (lambda a: a * 1000, NORM_OUT_OF_RANGE),
                       (lambda a: np.full_like(a, np.inf), NON_FINITE)):
        bad = _scaled(current, fn)
        assert await node._receive_model(peer, ModelMsg(1, ModelKind.AGGREGATED, model_hash(bad), (),
                                                        None, bad)) == reason
    assert _snapshot(node) == before
    assert node.rejected[NON_FINITE] == 2 and node.rejected[NORM_OUT_OF_RANGE] == 1
    assert node.rejected[DEGENERATE_MODEL] == 1

    # an honest-sized update from a member passes the check and is stored (the core may still
    # reject it by rank; a non-member's model is refused before it is stored: not_member)
    node.core.view.apply(peer, 0, 1, Status.JOIN, ("http://127.0.0.1:9",))
    ok = _scaled(current, lambda a: a * 1.05)
    okd, okh = make_delta(ok, current)
    assert await node._receive_model(peer, ModelMsg(1, ModelKind.TRAINED, okh, (), node.current, okd)) is None
    assert okh in node.store
    # --max-update-norm 0 turns the norm check off, never the finiteness check
    node.exchange.max_update_norm = 0.0   # as --max-update-norm 0
    big = _scaled(current, lambda a: a * 1000)
    assert await node._receive_model(peer, ModelMsg(1, ModelKind.TRAINED, model_hash(big), (), None, big)) is None
    assert model_hash(big) in node.store


async def test_adoption_check_refuses_a_members_worse_round_model(node: Node) -> None:
    """A member may be a legitimate aggregator: its round model passes the role checks, so the
    receiver checks the model itself on its own data (SPEC section 15, worse_model)."""
    peer = Identity.generate().public_key
    node.core.view.apply(peer, 0, 1, Status.JOIN, ("http://127.0.0.1:9",))
    current = node.store.get(node.current)

    def shifted(model, by: float):  # the output bias pushed towards class 0: finite, small norm
        out = list(model)
        a = from_raw(out[-1]).copy()
        a[0] += by
        out[-1] = to_raw(out[-1].name, a)
        return tuple(out)

    before = _snapshot(node)
    bad = shifted(current, 20.0)
    assert await node._receive_model(peer, ModelMsg(1, ModelKind.AGGREGATED, model_hash(bad), (), None, bad)) \
        == WORSE_MODEL
    # refused and never stored; the round goes on from the model this node holds
    assert node.rejected[WORSE_MODEL] == 1 and node.current == before[0] and model_hash(bad) not in node.store
    zeros = _scaled(current, np.zeros_like)
    assert await node._receive_model(peer, ModelMsg(1, ModelKind.AGGREGATED, model_hash(zeros), (), None,
                                                    zeros)) == DEGENERATE_MODEL
    # a model as good as ours passes (the core then checks the sender's rank)
    near = shifted(current, 0.01)
    assert await node._receive_model(peer, ModelMsg(1, ModelKind.AGGREGATED, model_hash(near), (), None,
                                                    near)) is None
    # --adopt-margin 0 turns the check off
    node.worker.adoption.cap = 0.0
    assert await node._receive_model(peer, ModelMsg(1, ModelKind.AGGREGATED, model_hash(bad), (), None, bad)) is None


async def test_model_data_non_finite_rejected(node: Node) -> None:
    import asyncio
    bad = _scaled(node.store.get(node.current), _nan_first)
    h = model_hash(bad)
    fut = asyncio.get_running_loop().create_future()
    node.exchange.fetches[h] = fut
    assert node.exchange.on_model_data(ModelData(h, bad))[0] == NON_FINITE
    assert not fut.done() and h not in node.store
    node.exchange.fetches.pop(h)


async def test_http_bad_models_from_a_stranger_never_change_the_model(node: Node) -> None:
    """Over real HTTP: rejected (400) with a sanity reason or a role reason, counted, model unchanged."""
    import aiohttp
    stranger = Identity.generate()
    current = node.store.get(node.current)
    before = _snapshot(node)
    acc0 = node.learner.evaluate(current).accuracy
    nan_trained = _scaled(current, lambda a: _nan_first(a + 0.01))
    delta, h1 = make_delta(nan_trained, current)
    huge = _scaled(current, lambda a: a * 1e6)
    frames = [(ModelMsg(1, ModelKind.TRAINED, h1, (), node.current, delta), NON_FINITE),
              (ModelMsg(2, ModelKind.AGGREGATED, model_hash(huge), (), None, huge), NORM_OUT_OF_RANGE)]
    async with aiohttp.ClientSession() as s:
        for i, (msg, reason) in enumerate(frames):
            frame = encode(stranger, "t", 100 + i, time.time(), msg)
            async with s.post(node.cfg.address + "/v1/messages", data=frame) as r:
                body = await r.json()
                assert r.status == 400 and body["rejected"] in {reason} | ROLE_REASONS, body
    assert _snapshot(node) == before
    assert h1 not in node.store and model_hash(huge) not in node.store
    rej = node.status()["messages_rejected"]
    assert rej.get(NON_FINITE, 0) + rej.get(NORM_OUT_OF_RANGE, 0) + sum(rej.get(r, 0) for r in ROLE_REASONS) >= 2
    assert node.learner.evaluate(node.store.get(node.current)).accuracy == acc0


async def test_http_huge_empty_shape_is_malformed_not_500(node: Node) -> None:
    import aiohttp
    from gossipnode.wire import MsgType, seal
    stranger = Identity.generate()
    hist = [[stranger.public_key, 1, 1, [["history", "<f2", [0, 2**62, 2**62], b""]]]]
    body = msgpack.packb([1, 0, b"\1" * 32, [], None, [], hist])
    frame = seal(stranger, "t", MsgType.MODEL, 7, time.time(), [body])
    async with aiohttp.ClientSession() as s:
        async with s.post(node.cfg.address + "/v1/messages", data=frame) as r:
            assert r.status == 400 and await r.json() == {"rejected": "malformed"}
    assert node.rejected["malformed"] == 1


# ---- a live node process learns; strangers' NaN / 1e30 models never reach it ---------------


@pytest.mark.slow
def test_live_node_rejects_nan_and_huge_models(node_procs) -> None:
    (n,) = node_procs(1, ["--mnist1d-samples", "2000", "--bootstrap-wait", "1", "--bootstrap-timeout", "2",
                          "--network-id", "t", "--ping-timeout", "1", "--aggregation-timeout", "3"])
    n.wait_up()
    wait_for(lambda: (n.status()["last_eval"] or {}).get("round", 0) >= 2, 120, "two rounds", [n])
    st = n.status()
    acc0 = st["last_eval"]["accuracy"]
    with urllib.request.urlopen(n.url + "/v1/models/current", timeout=5) as r:
        base_hash = bytes.fromhex(r.headers["X-Model-Hash"])
        current = tuple(to_raw(name, np.frombuffer(data, dtype).reshape(shape))
                        for name, dtype, shape, data in msgpack.unpackb(r.read()))
    stranger = Identity.generate()
    nan_trained = _scaled(current, lambda a: _nan_first(a + 0.01))
    delta, h1 = make_delta(nan_trained, current)
    huge = _scaled(current, lambda a: a * 1e6)
    bad_hashes = {h1.hex(), model_hash(huge).hex()}
    k = st["round"]
    for i, msg in enumerate([ModelMsg(k, ModelKind.TRAINED, h1, (), base_hash, delta),
                             ModelMsg(k + 1, ModelKind.AGGREGATED, model_hash(huge), (), None, huge)]):
        req = urllib.request.Request(n.url + "/v1/messages", data=encode(stranger, "t", 10 + i, time.time(), msg),
                                     method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            status = 202
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == 400, status
    rej = n.status()["messages_rejected"]
    assert sum(rej.values()) >= 2 and set(rej) <= {NON_FINITE, NORM_OUT_OF_RANGE, "missing_base"} | ROLE_REASONS
    # learning goes on, from honest models only
    wait_for(lambda: n.status()["last_eval"]["round"] >= k + 2, 120, "two more rounds", [n])
    st = n.status()
    assert st["model_hash"] not in bad_hashes
    assert st["last_eval"]["accuracy"] >= acc0 - 0.1
    assert all(np.isfinite(v) for v in (st["last_eval"]["accuracy"], st["last_eval"]["loss"]))


# ---- the simulator applies the same check ------------------------------------------------------


def test_sim_aggregate_drops_insane_models() -> None:
    from gossipnode.learn import data as ldata
    from gossipnode.sim import SimConfig, make_engine
    ds = ldata.load_mnist1d(num_samples=400)
    eng = make_engine(SimConfig(nodes=4, rounds=1, sample_size=3, eval_samples=50), ds)
    base_h = eng.initial
    base = eng.models[base_h]
    honest = [eng.put({k: (v + 0.01 * (i + 1)).astype(v.dtype) if v.dtype.kind == "f" else v
                       for k, v in base.items()}, parent=base_h) for i in range(2)]
    nan = eng.put({k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v for k, v in base.items()},
                  parent=base_h)
    huge = eng.put({k: v * 1e6 if v.dtype.kind == "f" else v for k, v in base.items()}, parent=base_h)
    zeros = eng.put({k: np.zeros_like(v) if v.dtype.kind == "f" else v for k, v in base.items()},
                    parent=base_h)
    h = eng.aggregate(0, 1, [(0, honest[0]), (1, honest[1]), (2, nan), (3, huge), (4, zeros)])
    out = eng.models[h]
    assert all(np.isfinite(v).all() for v in out.values() if v.dtype.kind == "f")
    assert eng.models_rejected == {NON_FINITE: 1, NORM_OUT_OF_RANGE: 1, DEGENERATE_MODEL: 1}
    assert update_ratio(out, base) < 1.0
