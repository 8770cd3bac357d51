"""--compress in a real node: the send path compresses TRAINED deltas and names the reconstruction;
over real HTTP a receiver decodes any encoding and rejects a malformed one as `bad_encoding`."""
from __future__ import annotations

import struct
import threading
import time

import aiohttp
import numpy as np
import pytest

from gossipnode.runtime.config import NodeConfig
from gossipnode.core.messages import ModelKind, ModelMsg, RawTensor
from gossipnode.learn.compress import Compressor
from gossipnode.runtime.node import Node
from gossipnode.wire.codec import encode
from gossipnode.wire.identity import Identity
from gossipnode.wire.tensors import TOPK, apply_delta, from_raw, make_delta, model_hash, to_raw

from conftest import free_ports


@pytest.fixture
async def node(tmp_path):
    (port,) = free_ports(1)
    cfg = NodeConfig(port=port, state_dir=str(tmp_path / "n"), mnist1d_samples=1000, network_id="t",
                     bootstrap_wait=600, bootstrap_timeout=600, max_message_mb=1.0, compress="topk:0.05")
    n = Node(cfg)
    await n.start()
    yield n
    await n.stop(graceful=False)


async def _post(n: Node, body: bytes) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(n.cfg.address + "/v1/messages", data=body) as r:
            return r.status, (await r.json() if r.status != 202 else {})


async def test_training_sends_a_compressed_delta_named_by_its_reconstruction(node: Node) -> None:
    base_h = node.current
    base = node.store.get(base_h)
    assert node.worker.compressor is not None and base is not None
    await node._train(1, base_h, threading.Event())
    trained = [h for h in node.store._models if node.store.parent(h) == base_h]
    assert len(trained) == 1
    h = trained[0]
    got = node.store.delta_of(h)
    assert got is not None and got[0] == base_h
    delta = got[1]
    floats = [t for t in delta if t.dtype != "<i8"]
    assert floats and all(t.dtype == TOPK for t in floats)
    assert sum(len(t.data) for t in delta) < sum(len(t.data) for t in base) / 5
    assert model_hash(apply_delta(base, delta)) == h          # what every receiver will compute
    assert node.worker.compressor.residual_norm() > 0                 # the dropped part waits for next time
    sent = node.exchange.attach_tensors(ModelMsg(2, ModelKind.TRAINED, h, ()))
    assert sent is not None and sent.base == base_h and sent.tensors == delta


async def test_receiver_decodes_compressed_and_rejects_bad_encoding(node: Node) -> None:
    peer = Identity.generate()
    base = node.store.get(node.current)
    assert base is not None
    now, seq = time.time(), 50_000
    rng = np.random.default_rng(0)
    model = tuple(to_raw(t.name, from_raw(t) + rng.standard_normal(t.shape).astype(np.float32) * 1e-3)
                  if t.dtype == "<f4" else t for t in base)
    for i, spec in enumerate(("f16", "int8", "topk:0.1")):
        delta, h = make_delta(model, base, Compressor(spec))
        msg = ModelMsg(1, ModelKind.TRAINED, h, (), node.current, delta)
        status, body = await _post(node, encode(peer, "t", seq + i, now, msg))
        # decoded, hashed and sane: only the role check (a stranger) refuses it
        assert status == 400 and body == {"rejected": "not_member"}, (spec, body)
    # the same delta with unsorted top-k indices in its first float tensor
    delta, h = make_delta(model, base, Compressor("topk:0.1"))
    j = next(i for i, t in enumerate(delta) if t.dtype == TOPK and struct.unpack_from("<I", t.data)[0] >= 2)
    t = delta[j]
    k = struct.unpack_from("<I", t.data)[0]
    idx = list(struct.unpack_from(f"<{k}I", t.data, 4))
    idx[0], idx[1] = idx[1], idx[0]
    bad = RawTensor(t.name, t.dtype, t.shape, t.data[:4] + struct.pack(f"<{k}I", *idx) + t.data[4 + 4 * k:])
    msg = ModelMsg(1, ModelKind.TRAINED, h, (), node.current, delta[:j] + (bad,) + delta[j + 1:])
    status, body = await _post(node, encode(peer, "t", seq + 10, now, msg))
    assert status == 400 and body == {"rejected": "bad_encoding"}
    assert node.status()["messages_rejected"]["bad_encoding"] == 1
