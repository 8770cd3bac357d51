"""`gossipnode sim --compress`: compressed runs still learn, and their bytes are the encoded sizes."""
from __future__ import annotations

import numpy as np
import pytest

from gossipnode.core.messages import ModelKind, ModelMsg
from gossipnode.learn import data as ldata
from gossipnode.learn.learner import to_model
from gossipnode.sim import SimConfig, make_engine, run_sim
from gossipnode.wire.codec import encode
from gossipnode.wire.identity import Identity
from gossipnode.wire.tensors import make_delta


@pytest.fixture(scope="module")
def small_data() -> ldata.Dataset:
    return ldata.load_mnist1d(num_samples=3000)


def cfg(**kw) -> SimConfig:
    base = {"nodes": 12, "rounds": 12, "mnist1d_samples": 3000, "sample_size": 4, "eval_samples": 400,
            "filter": "none", "correct": "none", "local_epochs": 2}
    base.update(kw)
    return SimConfig(**base)


def test_config_validates_and_canonicalises() -> None:
    assert cfg(compress="TOPK:0.5").compress == "topk:0.5"
    with pytest.raises(ValueError, match="topk"):
        cfg(compress="topk:0")


def test_modest_topk_learns_with_far_fewer_trained_bytes(small_data) -> None:
    plain = run_sim(cfg(), data=small_data)["summary"]
    r = run_sim(cfg(compress="topk:0.05"), data=small_data)
    s, series = r["summary"], r["series"]
    assert s["compress"] == "topk:0.05" and s["rounds_completed"] == 12
    assert series[-1]["acc_mean"] > series[0]["acc_mean"] + 0.05
    assert s["final_acc_mean"] > plain["final_acc_mean"] - 0.1
    # the same number of TRAINED frames, each at its encoded size: about 8 * 5 % of 4 bytes per value
    assert s["messages"]["model_trained"] == plain["messages"]["model_trained"]
    assert s["message_bytes"]["model_trained"] < plain["message_bytes"]["model_trained"] / 3
    assert s["message_bytes"]["model_aggregated"] > 0 and s["bytes_total"] == sum(s["message_bytes"].values())


@pytest.fixture(scope="module")
def dpsgd_plain(small_data) -> dict:
    return run_sim(cfg(protocol="dpsgd", rounds=8), data=small_data)


@pytest.mark.parametrize("compress", ["int8", "topk:0.1"])
def test_dpsgd_compressed_learns(small_data, dpsgd_plain, compress: str) -> None:
    plain = dpsgd_plain
    r = run_sim(cfg(protocol="dpsgd", rounds=8, compress=compress), data=small_data)
    assert r["series"][-1]["acc_mean"] > r["series"][0]["acc_mean"] + 0.05
    assert r["summary"]["bytes_total"] < plain["summary"]["bytes_total"] / 3


def test_compressed_frame_size_is_the_codec_size(small_data) -> None:
    """The engine's accounting of a compressed TRAINED frame equals what the codec encodes."""
    eng = make_engine(cfg(compress="topk:0.05"), data=small_data)
    base_h = eng.initial
    trained = eng.train(0, base_h)
    h = eng.compress(0, trained, base_h)
    assert eng.parent[h] == base_h and h in eng.delta_bytes
    base = to_model(eng.models[base_h])
    # the sender's reconstruction is the one the wire's make_delta names (same compressor kind)
    from gossipnode.learn.compress import Compressor
    delta, _ = make_delta(to_model(eng.models[trained]), base, Compressor("topk:0.05"))
    msg = ModelMsg(1000, ModelKind.TRAINED, h, (), base_h, delta)
    real = len(encode(Identity.from_seed(b"\x01" * 32), "gossipnode", 1 << 20, 1.7e9, msg))
    assert eng.msg_size(msg) == real
    assert eng.msg_size(msg) < eng.sizes.delta_model / 5
    # and the reconstruction differs from the trained model only by what the residual holds
    res = eng._compressors[0].residual
    for k, v in eng.models[h].items():
        if k in res:
            np.testing.assert_allclose(v + res[k], eng.models[trained][k], atol=1e-5)
