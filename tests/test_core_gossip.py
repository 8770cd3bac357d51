"""Unit tests of the sans-I/O gossip-learning core."""
from __future__ import annotations

import random

import pytest
from core_harness import pk_of

from gossipnode.core.actions import Finished, Merge, NewModel, Send, StartTraining
from gossipnode.core.gossip import GossipConfig, GossipCore
from gossipnode.core.messages import Advertise, ModelKind, ModelMsg, Ping, Status

ME, A, B, C = (pk_of(i) for i in range(4))
M0, MA, MB, MERGED, TRAINED = (bytes([i]) * 32 for i in range(1, 6))


def core(peers=(A, B, C), **kw) -> GossipCore:
    return GossipCore(GossipConfig(interval=10.0, **kw), ME, list(peers), M0, random.Random(1))


def gossip(model: bytes, rnd: int = 0) -> ModelMsg:
    return ModelMsg(rnd, ModelKind.GOSSIP, model, ())


def test_pushes_current_model_to_a_random_peer_every_interval() -> None:
    c = core()
    assert c.start(0.0) == []
    first = c.next_deadline()
    assert 0.0 <= first < 10.0
    assert c.tick(first - 0.001) == []
    sends = []
    t = first
    for _ in range(30):
        out = c.tick(t)
        assert len(out) == 1 and isinstance(out[0], Send)
        assert out[0].msg.kind == ModelKind.GOSSIP and out[0].msg.model == M0
        sends.append(out[0].peer)
        assert c.next_deadline() == pytest.approx(t + 10.0)
        t += 10.0
    assert set(sends) == {A, B, C}  # random peers, never self
    assert ME not in sends


def test_receive_merges_then_trains_then_adopts() -> None:
    c = core()
    c.start(0.0)
    out = c.handle(1.0, A, gossip(MA, rnd=4))
    assert out == [Merge(5, M0, ((A, MA),))]   # age = max(own 0, received 4) + 1
    out = c.merge_done(1.1, 5, MERGED)
    assert NewModel(5, MERGED, "merged") in out and StartTraining(5, MERGED) in out
    assert c.model == MERGED and c.round == 5
    out = c.training_done(2.0, 5, TRAINED)
    assert out == [NewModel(5, TRAINED, "trained")]
    assert c.model == TRAINED and c.busy is None
    # the next push carries the trained model
    out = c.tick(c.next_deadline())
    assert out[0].msg.model == TRAINED and out[0].msg.round == 5


def test_models_arriving_while_busy_are_merged_together_afterwards() -> None:
    c = core()
    c.start(0.0)
    c.handle(1.0, A, gossip(MA))
    c.merge_done(1.1, 1, MERGED)
    assert c.handle(1.2, B, gossip(MB)) == []          # training: buffered
    assert c.handle(1.3, A, gossip(MA, rnd=2)) == []   # newest per sender replaces the older one
    out = c.training_done(2.0, 1, TRAINED)
    merges = [a for a in out if isinstance(a, Merge)]
    assert merges == [Merge(3, TRAINED, ((B, MB), (A, MA)))]


def test_stale_completions_are_ignored() -> None:
    c = core()
    c.start(0.0)
    assert c.training_done(1.0, 1, TRAINED)[0].kind == "training_stale"
    c.handle(1.0, A, gossip(MA))
    assert c.merge_done(1.1, 99, MERGED)[0].kind == "merge_stale"
    assert c.model == M0


def test_no_training_mode_only_merges() -> None:
    c = core(train_after_merge=False)
    c.start(0.0)
    c.handle(1.0, A, gossip(MA))
    out = c.merge_done(1.1, 1, MERGED)
    assert not any(isinstance(a, StartTraining) for a in out)
    assert c.busy is None


def test_failed_peer_is_skipped_then_retried_and_leave_removes() -> None:
    c = core(peers=(A, B), failure_backoff=1000.0)
    c.start(0.0)
    c.peer_failed(0.0, A)
    t = c.next_deadline()
    for _ in range(10):
        assert c.tick(t)[0].peer == B
        t += 10.0
    c.handle(t, B, Advertise(0, 2, Status.LEAVE))
    assert B not in c.peers
    assert c.tick(t)[0].kind == "no_peer"   # A still backed off, B left
    t += 2000.0
    assert c.tick(t)[0].peer == A


def test_ignores_other_messages_and_unknown_senders_join() -> None:
    c = core(peers=())
    c.start(0.0)
    assert c.handle(0.5, A, Ping(1, 1))[0].kind == "ignored"
    c.handle(0.6, A, ModelMsg(1, ModelKind.TRAINED, MA, ()))
    assert c.busy is None
    c.handle(0.7, B, gossip(MB))
    assert B in c.peers   # a sender becomes a peer


def test_leave_and_max_rounds() -> None:
    c = core()
    c.start(0.0)
    out = c.leave(1.0)
    assert any(isinstance(a, Finished) for a in out)
    assert {a.peer for a in out if isinstance(a, Send)} == {A, B, C}
    assert c.next_deadline() is None and c.handle(2.0, A, gossip(MA)) == []
    d = core(max_rounds=1)
    d.start(0.0)
    d.handle(1.0, A, gossip(MA))
    d.merge_done(1.1, 1, MERGED)
    assert any(isinstance(a, Finished) for a in d.training_done(2.0, 1, TRAINED))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        GossipConfig(interval=0)
    with pytest.raises(ValueError):
        GossipConfig(inbox_size=0)
