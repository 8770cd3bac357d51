"""The core's hooks for transport-level discovery (MQTT announces) and departures (last wills)."""
from __future__ import annotations

import random

from gossipnode.core.actions import Send, SendTo
from gossipnode.core.auth import DigestAuth
from gossipnode.core.config import ModestConfig
from gossipnode.core.messages import Advertise, Ping, Pong, Status, ViewRecord, ViewShare
from gossipnode.core.modest import ModestCore


def _core(i: int) -> ModestCore:
    pk = bytes([i]) * 32
    return ModestCore(ModestConfig(sample_size=3, bootstrap_wait=2.0, bootstrap_timeout=30.0), pk,
                      (f"mqtt://{i:016x}",), b"\0" * 32, random.Random(i))


def _answer_probe(a: ModestCore, b: ModestCore, out: list, t: float) -> None:
    """b answers a's probe ping (joiners enter a view only once reached at their signed address)."""
    ping = next(x.msg for x in out if isinstance(x, Send) and x.peer == b.pk and isinstance(x.msg, Ping))
    a.handle(t, b.pk, Pong(0, ping.nonce, b.own_record()))


def test_discovered_peer_gets_a_join_advert_and_delays_round_one() -> None:
    a, b = _core(1), _core(2)
    a.start(0.0, [])
    out = a.discovered(0.5, b.pk, b.addresses)
    assert out == [SendTo(b.addresses[0], Advertise.of(a.own_record()))]
    assert out[0].msg == Advertise(0, a.index, Status.JOIN, a.addresses, a.own_record().sig)
    assert b.addresses[0] in a.bootstrap          # round 1 waits until b is known
    assert a.discovered(0.6, a.pk, a.addresses) == []   # never ourselves
    # b answers the advert with its view; b is then known and not advertised to again
    b.start(0.0, [])
    out = a.handle(0.7, b.pk, ViewShare(0, (b.own_record(),)))
    assert b.pk not in a.view and b.pk in a.pending   # probed first
    _answer_probe(a, b, out, 0.71)
    assert b.pk in a.view
    assert a.discovered(0.8, b.pk, b.addresses) == []


def test_departed_marks_leave_and_any_signed_message_revives() -> None:
    a, b = _core(1), _core(2)
    a.start(0.0, [])
    b.start(0.0, [])
    _answer_probe(a, b, a.handle(0.1, b.pk, Advertise.of(b.own_record())), 0.11)
    assert a.view.get(b.pk).status == Status.JOIN
    a.departed(1.0, b.pk)
    assert a.view.get(b.pk).status == Status.LEAVE and b.pk not in a.active(0)
    # the broker, not b, went away: b's next (signed) message undoes the mark
    a.handle(2.0, b.pk, ViewShare(0, ()))
    assert a.view.get(b.pk).status == Status.JOIN and b.pk in a.active(0)
    # a real LEAVE advert still wins
    a.departed(3.0, b.pk)
    leave = DigestAuth().sign(ViewRecord(b.pk, 0, b.index + 1, Status.LEAVE, b.addresses))
    a.handle(3.1, b.pk, Advertise.of(leave))
    assert a.view.get(b.pk).status == Status.LEAVE
