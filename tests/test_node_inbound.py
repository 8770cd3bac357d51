"""Untrusted input over real HTTP: every bad message is rejected with its reason, counted, and
changes nothing; the node stays up."""
from __future__ import annotations

import os
import random
import time

import aiohttp
import pytest

from gossipnode.runtime.config import NodeConfig
from gossipnode.core.messages import Advertise, ModelKind, ModelMsg, Ping, Status
from gossipnode.runtime.node import Node
from gossipnode.wire.codec import encode
from gossipnode.wire.identity import Identity

from conftest import free_ports


@pytest.fixture
async def node(tmp_path, request):
    (port,) = free_ports(1)
    cfg = NodeConfig(port=port, state_dir=str(tmp_path / "n"), mnist1d_samples=1000, network_id="t",
                     bootstrap_wait=600, bootstrap_timeout=600, max_message_mb=1.0,
                     history_sketch=getattr(request, "param", NodeConfig.history_sketch))
    n = Node(cfg)
    await n.start()
    yield n
    await n.stop(graceful=False)


async def _post(n: Node, body: bytes) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(n.cfg.address + "/v1/messages", data=body) as r:
            return r.status, (await r.json() if r.status != 202 else {})


def _snapshot(n: Node):
    return (dict(n.core.view.entries), n.core.round, n.current, n.core.agg_idx, n.core.train_idx)


async def test_each_bad_message_rejected_counted_and_harmless(node: Node) -> None:
    peer = Identity.generate()
    before = _snapshot(node)
    now = time.time()
    seq = 10_000
    good = encode(peer, "t", seq, now, Ping(1, 7))
    cases = {
        "malformed": b"\xc1 not msgpack",
        "wrong_network": encode(peer, "other-net", seq + 1, now, Ping(1, 1)),
        "bad_signature": good[:-1] + bytes([good[-1] ^ 1]),
        "unknown_version": b"\x98\x01" + good[2:],   # a v1 frame
    }
    for reason, frame in cases.items():
        status, body = await _post(node, frame)
        assert status == 400 and body == {"rejected": reason}, (reason, status, body)
    status, body = await _post(node, b"\0" * (2 << 20))
    assert status == 413 and body == {"rejected": "too_large"}
    assert _snapshot(node) == before

    # A model whose hash does not match its tensors is rejected after decoding.
    fake = ModelMsg(3, ModelKind.TRAINED, b"\1" * 32, (), None, node.learner.initial)
    status, body = await _post(node, encode(peer, "t", seq + 2, now, fake))
    assert status == 400 and body == {"rejected": "hash_mismatch"}
    assert node.core.agg_idx == 0

    # A valid message is accepted once; the same bytes again are a replay.
    assert (await _post(node, good))[0] == 202
    status, body = await _post(node, good)
    assert status == 400 and body == {"rejected": "replay"}

    # Random garbage never takes the node down.
    rng = random.Random(1)
    for _ in range(200):
        status, _ = await _post(node, bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))))
        assert status == 400
    rej = node.status()["messages_rejected"]
    for reason in ("malformed", "wrong_network", "bad_signature", "unknown_version", "too_large",
                   "hash_mismatch", "replay"):
        assert rej.get(reason, 0) >= 1, (reason, rej)
    async with aiohttp.ClientSession() as s:
        async with s.get(node.cfg.address + "/v1/status") as r:
            assert r.status == 200


async def test_advertise_adds_peer_and_is_answered(node: Node, tmp_path) -> None:
    from gossipnode.core.messages import Ping, Pong, ViewRecord
    from gossipnode.wire.records import Ed25519RecordAuth
    peer = Identity.generate()
    auth = Ed25519RecordAuth(peer, "t")
    rec = auth.sign(ViewRecord(peer.public_key, 0, 1, Status.JOIN, ("http://127.0.0.1:9",)))
    unsigned = encode(peer, "t", 1, time.time(), Advertise(0, 1, Status.JOIN, rec.addresses, b"\0" * 64))
    assert await _post(node, unsigned) == (400, {"rejected": "bad_record_sig"})
    assert peer.public_key not in node.core.view and not node.core.pending
    frame = encode(peer, "t", 2, time.time(), Advertise.of(rec))
    assert (await _post(node, frame))[0] == 202
    # a joiner enters the view only once it answered a ping at its signed address
    assert peer.public_key not in node.core.view and peer.public_key in node.core.pending
    nonce = node.core.pending[peer.public_key].nonce
    pong = encode(peer, "t", 3, time.time(), Pong(0, nonce + 1, rec))
    assert (await _post(node, pong))[0] == 202
    assert peer.public_key not in node.core.view          # a wrong nonce proves nothing
    assert (await _post(node, encode(peer, "t", 4, time.time(), Pong(0, nonce, rec))))[0] == 202
    assert peer.public_key in node.core.view
    assert node.status()["peers_known"] == 1
    _ = Ping


async def test_incompatible_model_rejected(node: Node) -> None:
    import numpy as np
    from gossipnode.wire.tensors import model_hash, to_raw
    peer = Identity.generate()
    wrong = (to_raw("w", np.zeros((3, 3), dtype="<f4")),)
    msg = ModelMsg(2, ModelKind.TRAINED, model_hash(wrong), (), None, wrong)
    status, body = await _post(node, encode(peer, "t", 5, time.time(), msg))
    assert status == 400 and body == {"rejected": "incompatible_model"}
    assert node.core.agg_idx == 0
    _ = os.getpid()


@pytest.mark.parametrize("node", [0], indirect=True)   # --history-sketch 0: full history records
async def test_history_records_validated_and_merged(node: Node) -> None:
    import numpy as np
    from gossipnode.core.messages import HistoryRecord
    from gossipnode.wire.identity import node_id
    from gossipnode.wire.tensors import model_hash, to_raw
    peer, subject = Identity.generate(), Identity.generate()
    # A stranger's model (and the history records on it) is refused before anything is stored.
    model = node.learner.initial
    h = model_hash(model)
    n = node.learner.history_size
    rec = HistoryRecord(subject.public_key, 1, 1, (to_raw("history", np.ones(n, "<f2")),))
    msg = ModelMsg(1, ModelKind.AGGREGATED, h, (), None, model, (rec,))
    status, body = await _post(node, encode(peer, "t", 1, time.time(), msg))
    assert status == 400 and body == {"rejected": "not_member"}
    assert len(node.pipeline.filter.store) == 0 and node.core.train_idx == 0
    assert node.status()["messages_rejected"]["not_member"] == 1
    # Once it is a member (as after a signed join and probe), its model is taken.
    node.core.view.apply(peer.public_key, 0, 1, Status.JOIN, ("http://127.0.0.1:9",))
    h = model_hash(model)
    n = node.learner.history_size
    bad = HistoryRecord(subject.public_key, 1, 1, (to_raw("history", np.zeros(n + 1, "<f2")),))
    msg = ModelMsg(1, ModelKind.AGGREGATED, h, (), None, model, (bad,))
    status, body = await _post(node, encode(peer, "t", 3, time.time(), msg))
    assert status == 400 and body == {"rejected": "bad_history"}
    store = node.pipeline.filter.store
    assert len(store) == 0 and node.core.train_idx == 0
    good = HistoryRecord(subject.public_key, 1, 2, (to_raw("history", np.ones(n, "<f2")),))
    msg = ModelMsg(1, ModelKind.AGGREGATED, h, (), None, model, (good,))
    status, _ = await _post(node, encode(peer, "t", 4, time.time(), msg))
    assert status == 202
    rec = store.get(node_id(subject.public_key))
    assert rec is not None and rec.distance == 3 and rec.received_from == node_id(peer.public_key)


async def test_sketch_tables_validated_voted_and_forwarded(node: Node) -> None:
    """Default --history-sketch 128 (SPEC 15.2): a member's table is checked (shape, values, one row
    per peer, rounds not above the message's), its entries offered; two senders outvote one."""
    import numpy as np
    from gossipnode.core.messages import HistoryRecord, SketchTable
    from gossipnode.wire.identity import node_id
    from gossipnode.wire.tensors import model_hash, to_raw
    a, b, c, subject = (Identity.generate() for _ in range(4))
    model = node.learner.initial
    h = model_hash(model)
    for p in (a, b, c, subject):
        node.core.view.apply(p.public_key, 0, 1, Status.JOIN, ("http://127.0.0.1:9",))
    store = node.pipeline.filter.store
    assert store.sketch_dims == 128

    def table(rows, rounds=(3,), peers=None, dt="<f2"):
        peers = peers or (subject.public_key,) * len(rounds)
        return SketchTable(tuple(peers), tuple(rounds), to_raw("sketches", np.asarray(rows, dtype=dt)))

    seq = iter(range(100, 200))

    async def post(sender, t, rnd=5):
        msg = ModelMsg(rnd, ModelKind.AGGREGATED, h, (), None, model, (), t)
        return await _post(node, encode(sender, "t", next(seq), time.time(), msg))

    bad = {"shape": table(np.ones((1, 64))), "values": table(np.full((1, 128), np.inf)),
           "twice": table(np.ones((2, 128)), rounds=(3, 4))}
    for t in bad.values():
        assert await post(a, t) == (400, {"rejected": "bad_history"})
    assert len(store) == 0 and node.status()["messages_rejected"]["bad_history"] == 3
    # a round above the message's is skipped (no one aggregated it yet), the frame is taken
    assert (await post(a, table(np.ones((1, 128)), rounds=(9,))))[0] == 202
    assert len(store) == 0 and node.histories.entries_skipped == 1
    # entries about a key that is not a member are skipped (they could evict real ones)
    stranger = Identity.generate().public_key
    assert (await post(a, table(np.ones((1, 128)), peers=(stranger,))))[0] == 202
    assert len(store) == 0 and node.histories.entries_skipped == 2
    assert node.status()["history_entries_skipped"] == 2
    forged, honest = np.full((1, 128), 4.0), np.ones((1, 128))
    assert (await post(a, table(forged)))[0] == 202
    assert (await post(b, table(honest)))[0] == 202
    assert (await post(c, table(honest)))[0] == 202
    rec = store.get(node_id(subject.public_key))
    assert rec is not None and rec.round == 3 and rec.votes == 2 and np.allclose(rec.history, 1.0)
    # a newer round wins over an older one, and the node forwards the table on its next model
    assert (await post(a, table(forged * 2, rounds=(4,))))[0] == 202
    assert store.get(node_id(subject.public_key)).round == 4
    out = node.histories.attach(ModelMsg(6, ModelKind.TRAINED, h, ()), a.public_key).sketches
    assert out is not None and subject.public_key in out.peers and out.sketches.shape[1] == 128
    # full history records from a node running --history-sketch 0 become sketch offers
    n = node.learner.history_size
    rec = HistoryRecord(c.public_key, 2, 1, (to_raw("history", np.ones(n, "<f2")),))
    msg = ModelMsg(5, ModelKind.AGGREGATED, h, (), None, model, (rec,))
    assert (await _post(node, encode(b, "t", next(seq), time.time(), msg)))[0] == 202
    assert store.get(node_id(c.public_key)).history.shape == (128,)
