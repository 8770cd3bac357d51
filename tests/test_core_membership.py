"""Authenticated membership in the core (issue 9 item 2): records only from their own peer,
joiners probed before they join, caps, and a round estimate bounded by R_v + round_window."""
from __future__ import annotations

import random

from core_harness import CoreNet, pk_of
from gossipnode.core.actions import Event, Finished, Send
from gossipnode.core.auth import DigestAuth
from gossipnode.core.config import ModestConfig
from gossipnode.core.messages import Advertise, Ping, Pong, Status, ViewRecord, ViewShare
from gossipnode.core.modest import ModestCore
from gossipnode.wire.identity import Identity
from gossipnode.wire.records import Ed25519RecordAuth

NET = "t"
HUGE = 2**63 - 1


def _node(i: int, **cfg) -> tuple[ModestCore, Identity]:
    ident = Identity.from_seed(bytes([i + 1]) * 32)
    c = ModestCore(ModestConfig(sample_size=3, **cfg), ident.public_key, (f"http://127.0.0.1:{9000 + i}",),
                   b"\0" * 32, random.Random(i), auth=Ed25519RecordAuth(ident, NET))
    c.start(0.0, [])
    return c, ident


def _rejected(actions, reason: str) -> int:
    return sum(int(a.detail.get("count", 1)) for a in actions
               if isinstance(a, Event) and a.kind == "rejected" and a.detail["reason"] == reason)


def _join(a: ModestCore, b: ModestCore, t: float = 0.1) -> None:
    """b joins a: JOIN advert, a probes b, b answers the probe."""
    out = a.handle(t, b.pk, Advertise.of(b.own_record()))
    ping = next(x.msg for x in out if isinstance(x, Send) and isinstance(x.msg, Ping) and x.peer == b.pk)
    a.handle(t, b.pk, Pong(0, ping.nonce, b.own_record()))
    assert b.pk in a.view


def _three():
    (a, _), (b, bi), (c, ci) = _node(0), _node(1), _node(2)
    _join(a, b)
    _join(a, c)
    return a, b, c, bi, ci


def test_forged_leave_join_and_address_records_are_rejected() -> None:
    a, b, c, _, _ = _three()
    mallory = Identity.generate()
    m_auth = Ed25519RecordAuth(mallory, NET)
    before = {pk: (e.status, e.addresses, e.index) for pk, e in a.view.entries.items()}
    forged_leave = ViewRecord(b.pk, 5, b.index + 1, Status.LEAVE, b.addresses, b"\1" * 64)
    out = a.handle(1.0, mallory.public_key, ViewShare(0, (forged_leave,)))
    assert _rejected(out, "bad_record_sig") == 1
    # a record of b signed by mallory's key is no better than garbage
    moved = ViewRecord(b.pk, 5, b.index + 1, Status.JOIN, ("http://127.0.0.1:6666",))
    moved = ViewRecord(moved.peer, moved.last_active, moved.index, moved.status, moved.addresses,
                       m_auth.identity.sign(b"x" * 32))
    out = a.handle(1.1, mallory.public_key, ViewShare(0, (moved,)))
    assert _rejected(out, "bad_record_sig") == 1
    # a keyless, made-up peer never enters the view or the pending joins
    keyless = ViewRecord(b"\x55" * 32, 0, 1, Status.JOIN, ("http://127.0.0.1:7777",), b"\0" * 64)
    out = a.handle(1.2, mallory.public_key, ViewShare(0, (keyless,)))
    assert keyless.peer not in a.view and keyless.peer not in a.pending
    # an advert is the sender's own record: it cannot name another peer
    out = a.handle(1.3, mallory.public_key, Advertise(0, 9, Status.LEAVE, b.addresses, b.own_record().sig))
    assert _rejected(out, "bad_record_sig") == 1
    assert {pk: (e.status, e.addresses, e.index) for pk, e in a.view.entries.items()} == before
    assert a.address_of(b.pk) == b.addresses
    # the owner itself can leave
    b.leave(2.0)
    a.handle(2.0, b.pk, Advertise.of(b.own_record()))
    assert a.view.get(b.pk).status == Status.LEAVE


def test_records_are_relayed_verbatim_and_local_evidence_stays_local() -> None:
    a, b, c, _, _ = _three()
    a.handle(1.0, b.pk, Ping(7, 1))               # local evidence: b is active around round 7
    assert a.view.get(b.pk).last_active == 7
    relayed = {r.peer: r for r in a.view.records()}
    assert relayed[b.pk] == b.own_record()        # b's own claim, byte for byte (last_active 0)
    assert relayed[a.pk].peer == a.pk and a.auth.verify(relayed[a.pk])


def test_huge_last_active_moves_round_at_most_the_window_and_no_early_exit() -> None:
    a, _ = _node(0, round_window=5, max_rounds=40, inactivity_threshold=20)
    evil, ei = _node(1)
    _join(a, evil)
    # a member signs its own record with last_active = 2^63 - 1 (its claim; it may lie about itself)
    lie = Ed25519RecordAuth(ei, NET).sign(ViewRecord(evil.pk, HUGE, evil.index, Status.JOIN, evil.addresses))
    a.note_verified(14)
    a.handle(1.0, evil.pk, ViewShare(0, (lie,)))
    a.handle(1.1, evil.pk, Ping(HUGE, 3))
    assert a.verified_round == 14 and a.round == 14 + 5
    out = a.handle(1.2, evil.pk, ViewShare(HUGE, ()))
    assert _rejected(out, "round_out_of_range") == 1
    fresh = Identity.generate()
    adv = Advertise.of(Ed25519RecordAuth(fresh, NET).sign(
        ViewRecord(fresh.public_key, HUGE, 1, Status.JOIN, ("http://127.0.0.1:1",))))
    assert _rejected(a.handle(1.3, fresh.public_key, adv), "round_out_of_range") == 1
    # --rounds 40: one lying record does not make the node leave, however long it waits
    t = 2.0
    for _ in range(50):
        t += 100.0
        assert not any(isinstance(x, Finished) for x in a.tick(t))
    assert not a.finish_sent and a.round == 19


def test_view_cap_pending_cap_and_join_rate_limit() -> None:
    auth = DigestAuth()
    c = ModestCore(ModestConfig(sample_size=3, max_peers=4, max_pending=3), pk_of(0), ("mem://0",),
                   b"\0" * 32, random.Random(0))
    c.start(0.0, [])
    recs = [auth.sign(ViewRecord(pk_of(i), 0, 1, Status.JOIN, (f"mem://{i}",))) for i in range(1, 40)]
    out = c.handle(0.1, pk_of(1), ViewShare(0, tuple(recs)))
    assert len(c.pending) == 3 and _rejected(out, "pending_full") == len(recs) - 3
    for pk, j in list(c.pending.items()):   # all answer their probes: they join (round 0)
        c.handle(0.2, pk, Pong(0, j.nonce, j.record))
    assert len(c.view) == 4 and not c.pending
    out = c.handle(0.3, pk_of(1), ViewShare(0, tuple(recs)))
    assert len(c.view) == 4 and _rejected(out, "view_full") == len(recs) - 3
    # one JOIN advert per key per ping_interval (a key not yet pending: e.g. turned away as the
    # pending joins are full; caps are checked before any signature verification)
    d = ModestCore(ModestConfig(sample_size=3, max_pending=1), pk_of(0), ("mem://0",), b"\0" * 32,
                   random.Random(0))
    d.start(0.0, [])
    d.handle(0.5, recs[4].peer, Advertise.of(recs[4]))
    assert list(d.pending) == [recs[4].peer]
    adv = Advertise.of(recs[5])
    n0 = d.auth.verified
    assert _rejected(d.handle(1.0, recs[5].peer, adv), "pending_full") == 1
    assert _rejected(d.handle(1.1, recs[5].peer, adv), "join_rate_limited") == 1
    assert _rejected(d.handle(2.2, recs[5].peer, adv), "pending_full") == 1
    assert d.auth.verified == n0
    # a pending joiner may re-advertise (the bootstrap loop does, every ping_interval)
    assert _rejected(d.handle(2.3, recs[4].peer, Advertise.of(recs[4])), "join_rate_limited") == 0


def test_joiner_enters_only_after_its_pong_and_after_the_next_model_send() -> None:
    cfg = ModestConfig(sample_size=3, ping_timeout=2.0, ping_interval=0.5)
    net = CoreNet(3, cfg)
    net.start()
    net.run_until(30.0)
    assert net.max_round() >= 3
    a = net.cores[pk_of(0)]
    # a joiner at an address nobody can reach: pinged, never answers, dropped; never in a view
    ghost = DigestAuth().sign(ViewRecord(pk_of(99), 0, 1, Status.JOIN, ("mem://99",)))
    out = a.handle(net.now, ghost.peer, Advertise.of(ghost))
    assert ghost.peer in a.pending and any(isinstance(x, Send) and isinstance(x.msg, Ping) for x in out)
    net.run_until(net.now + 10.0)
    assert ghost.peer not in a.pending and ghost.peer not in a.view
    # a real joiner: probed, answers, then joins everywhere and is sampled later
    j = net.add_node(3, ["mem://0"])
    net.run_until(net.now + 0.05)
    assert j not in a.view and j in a.pending and a.pending[j].reached   # waits for a's next model send
    net.run_until(net.now + 60.0)
    assert all(j in c.view for pk, c in net.cores.items() if pk != j)
    assert net.cores[j].verified_round >= 3   # it learnt the round from its bootstrap peer
    # ... and re-signed its record with that round; the bootstrap peer relays the new claim
    assert a.view.get(j).record.last_active >= 3


def test_flood_of_unreachable_fresh_keys_never_enters_views_and_rounds_go_on() -> None:
    cfg = ModestConfig(sample_size=4, ping_timeout=2.0, ping_interval=0.5)
    net = CoreNet(4, cfg)
    net.start()
    net.run_until(20.0)
    r0 = net.max_round()
    auth = DigestAuth()
    flood = [auth.sign(ViewRecord(pk_of(1000 + i), 0, 1, Status.JOIN, (f"mem://{1000 + i}",)))
             for i in range(1000)]
    for pk, c in net.cores.items():
        for rec in flood:
            net._run(pk, c.handle(net.now, rec.peer, Advertise.of(rec)))
        net._run(pk, c.handle(net.now, flood[0].peer, ViewShare(0, tuple(flood))))
        assert len(c.pending) <= cfg.max_pending
    net.run_until(40.0)
    r1 = net.max_round()
    net2 = CoreNet(4, cfg)
    net2.start()
    net2.run_until(20.0)
    base = net2.max_round()
    net2.run_until(40.0)
    assert r1 - r0 >= (net2.max_round() - base) / 2, (r0, r1, base, net2.max_round())
    for c in net.cores.values():
        assert len(c.view) == 4 and not any(p.peer in c.view for p in flood[:10])


def test_honest_harness_completes_rounds_with_signed_records() -> None:
    net = CoreNet(5, ModestConfig(sample_size=3))
    net.start()
    net.run_until(60.0)
    assert net.max_round() >= 5
    for c in net.cores.values():
        assert len(c.view) == 5
        assert all(c.auth.verify(r) for r in c.view.records())


def test_join_proof_of_work() -> None:
    from gossipnode.core.auth import pow_bits, solve_pow
    auth = DigestAuth()
    c = ModestCore(ModestConfig(sample_size=3, join_pow=8), pk_of(0), ("mem://0",), b"\0" * 32, random.Random(0))
    c.start(0.0, [])
    assert all(pow_bits(pk_of(i), 0) < 8 for i in (11, 13))
    lazy = auth.sign(ViewRecord(pk_of(11), 0, 1, Status.JOIN, ("mem://11",)))
    nonce = solve_pow(pk_of(12), 8)
    assert pow_bits(pk_of(12), nonce) >= 8
    worked = auth.sign(ViewRecord(pk_of(12), 0, 1, Status.JOIN, ("mem://12",), pow=nonce))
    assert _rejected(c.handle(0.1, pk_of(11), Advertise.of(lazy)), "insufficient_pow") == 1
    assert pk_of(11) not in c.pending
    c.handle(0.1, pk_of(12), Advertise.of(worked))
    assert pk_of(12) in c.pending
    out = c.handle(0.2, pk_of(12), ViewShare(0, (lazy, auth.sign(ViewRecord(pk_of(13), 0, 1, Status.JOIN)))))
    assert _rejected(out, "insufficient_pow") == 2 and len(c.pending) == 1


def test_gossip_peer_core_takes_only_owners_records() -> None:
    from gossipnode.core.gossip import GossipConfig
    from gossipnode.core.gossip_peer import GossipPeerCore
    auth = DigestAuth()
    a = GossipPeerCore(GossipConfig(interval=1.0), pk_of(0), ("mem://0",), b"\0" * 32, random.Random(0))
    b = GossipPeerCore(GossipConfig(interval=1.0), pk_of(1), ("mem://1",), b"\0" * 32, random.Random(1))
    a.start(0.0, [])
    b.start(0.0, [])
    a.handle(0.1, b.pk, Advertise.of(b.own_record()))
    b.handle(0.1, a.pk, Advertise.of(a.own_record()))
    assert b.pk in a.view and b.pk in a.gossip.peers
    forged = ViewRecord(b.pk, 0, b.index + 1, Status.LEAVE, b.addresses, b"\0" * 64)
    out = a.handle(0.2, pk_of(9), ViewShare(0, (forged,)))
    assert _rejected(out, "bad_record_sig") == 1 and b.pk in a.gossip.peers
    assert a.view.get(b.pk).status == Status.JOIN
    leave = b.leave(0.3)
    adv = next(x.msg for x in leave if isinstance(x, Send) and isinstance(x.msg, Advertise))
    assert auth.verify(adv.record(b.pk)) and adv.status == Status.LEAVE
