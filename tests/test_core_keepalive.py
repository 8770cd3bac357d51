"""Keep-alive pings and sparse idle probes (SPEC 15.7): active sets stay the alive population when
most nodes are idle for longer than tau, and idle nodes do not probe every inactive member."""
from __future__ import annotations

import random

from core_harness import CoreNet, pk_of
from gossipnode.core.actions import Event, Send
from gossipnode.core.config import ModestConfig
from gossipnode.core.messages import Ping, Status, ViewRecord
from gossipnode.core.modest import ModestCore


def _core(rounds: dict[int, int], own: int, **kw) -> ModestCore:
    cfg = ModestConfig(**({"sample_size": 3, "inactivity_threshold": 20} | kw))
    c = ModestCore(cfg, pk_of(0), ("mem://0",), b"\0" * 32, random.Random(0))
    c.start(0.0, [])
    c.view.merge([ViewRecord(pk_of(i), r, 1, Status.JOIN, (f"mem://{i}",)) for i, r in rounds.items()])
    c.train_idx = c.agg_idx = c.verified_round = own
    return c


def _pinged(actions) -> list[bytes]:
    return [a.peer for a in actions if isinstance(a, Send) and isinstance(a.msg, Ping)]


def test_a_current_node_pings_members_near_the_end_of_tau_and_no_others() -> None:
    # R = 100, tau = 20: due are signed last_active in [80, 90]; 100 is fresh, 79 inactive
    rounds = {1: 100, 2: 79} | {i: 85 for i in range(3, 16)} | {16: 90, 17: 80}
    c = _core(rounds, own=100)
    assert c.current() and c.round == 100
    due = {pk_of(i) for i in range(3, 18)}
    p1 = set(_pinged(c.tick(1.0)))
    first = p1 & due
    assert len(first) == 8 and p1 - due == {pk_of(2)}   # and the inactive one is probed (SPEC 15.5)
    assert not set(_pinged(c.tick(1.5))) & due          # before ping_interval: nothing more
    second = set(_pinged(c.tick(2.0))) & due
    assert second == due - first                        # the other 7, not the first 8 again
    assert pk_of(1) not in p1 | second


def test_many_members_due_at_once_get_a_larger_burst() -> None:
    # 400 members due together (a network that started at once): 8 per tick cannot reach them
    # in the tau / 2 = 10 rounds they have left; b = ceil(2 * 400 / (10 * (3 + 1))) = 20
    rounds = {1: 100} | {i: 85 for i in range(2, 402)}
    c = _core(rounds, own=100)
    assert c.current()
    first = set(_pinged(c.tick(1.0)))
    assert len(first) == 20
    second = set(_pinged(c.tick(2.0)))
    assert len(second) == 19 and not first & second   # 380 left: ceil(760 / 40)
    c2 = _core({1: 100} | {i: 85 for i in range(2, 3000)}, own=100)
    assert len(_pinged(c2.tick(1.0))) == 64            # capped


def test_an_idle_node_sends_no_keepalive_and_probes_inactive_members_sparingly() -> None:
    # R_v 10, hearsay R 30: idle (it took part in round 10). 60 members inactive at R = 30.
    rounds = {1: 30} | {i: 5 for i in range(2, 62)}

    def pings(keepalive: bool) -> int:
        c = _core(rounds, own=10, keepalive=keepalive)
        assert not c.current() and c.round == 30
        return sum(len(_pinged(c.tick(t / 2))) for t in range(2, 121))   # 60 s, a tick each 0.5 s

    sparse, every = pings(True), pings(False)
    print("pings in 60 s, keep-alive on / off:", sparse, every)
    assert sparse <= 8             # one per probe_max / 2 (10 s): 6 or 7
    assert every >= 60             # without it every inactive member is probed, again and again


def test_a_lagging_member_catches_up_on_a_ping_at_half_the_window() -> None:
    rounds = {i: 10 for i in range(1, 8)}
    c = _core(rounds, own=10)   # window = tau = 20
    assert not _pinged(c.handle(1.0, pk_of(1), Ping(19, 1)))   # below R_v + 10: a PONG only
    out = c.handle(2.0, pk_of(2), Ping(20, 2))                      # at R_v + 10: a witness walk
    walked = _pinged(out)
    assert walked and walked[0] == pk_of(2)


def _run(keepalive: bool) -> tuple[list[int], int, int]:
    cfg = ModestConfig(sample_size=3, inactivity_threshold=8, keepalive=keepalive, aggregation_timeout=30.0,
                       bootstrap_wait=0.5)
    net = CoreNet(60, cfg, latency=0.01, train_time=0.2, agg_time=0.02)
    net.start()
    sizes: list[int] = []
    t = 0.0
    while t < 200.0:
        t += 5.0
        net.run_until(t)
        for k, aggs in net.aggregations.items():
            for pk, _ in aggs:
                if k > 20:
                    sizes.append(len(net.cores[pk].active(k)))
        net.aggregations.clear()
    timeouts = sum(1 for _, _, a in net.events if isinstance(a, Event) and a.kind == "aggregation_timeout")
    return sizes, timeouts, net.max_round()


def test_active_sets_stay_the_alive_population_when_nodes_idle_longer_than_tau() -> None:
    # 60 nodes, s = 3, tau = 8: a node is sampled about every 20 rounds, more than tau
    on, on_timeouts, on_rounds = _run(True)
    off, _off_timeouts, _off_rounds = _run(False)
    print("A(k) at aggregators, keep-alive on: min", min(on), "mean", sum(on) / len(on), "rounds", on_rounds,
          "timeouts", on_timeouts, "| off: min", min(off), "mean", sum(off) / len(off), "rounds", _off_rounds)
    assert on_rounds > 100
    assert min(on) >= 54 and sum(on) / len(on) >= 58      # > 90 % of 60 alive nodes, always
    assert sum(off) / len(off) < sum(on) / len(on) - 5    # without keep-alive the sets shrink
    assert on_timeouts == 0
