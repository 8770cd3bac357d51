"""Issue 9 over real HTTP: each threat against one live 3-node cluster (2 node processes and a
member node run in this process, whose key the attacks borrow), via benchmarks/attacks.py.

Every test asserts that the attack changed no honest state (model, round, view, process,
memory, outbound traffic) and that honest learning went on (work done during the attack,
accuracy kept: run_attack flags an accuracy drop). A test that finds the cluster damaged
leaves it to be replaced before the next one, so one failure does not fail the rest.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import attacks as A  # noqa: E402

pytestmark = pytest.mark.slow

CONNECTION_BOUND = 30.0  # idle / slowloris connections must be closed by then
OBSERVE = 4.0            # seconds each attack is watched after its frames went out (long enough
                         # that an honest round always completes in it: 2.5 s saw none, 3 of 19)


class Live:
    """The module's cluster; replaced when a test left it damaged."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.cluster: A.Cluster | None = None
        self.rate = 0.0
        self.sink = A.Sink()
        self.damaged = True

    def get(self) -> A.Cluster:
        if self.damaged or self.cluster is None:
            if self.cluster is not None:
                self.cluster.stop()
            self.n += 1
            self.cluster = A.Cluster(self.root, n_honest=2, extra=["--rounds", "100000"], tag=f"c{self.n}")
            self.cluster.start()
            self.cluster.wait_ready(min_round=3, min_acc=0.45, timeout=60)
            self.rate = A.measure_rate(self.cluster, 2.0)
            self.damaged = False
        return self.cluster

    def attack(self, name: str, who: str, fn, min_rate: float | None = None, background: bool = False) -> A.Row:
        c = self.get()
        if min_rate is not None:
            self.rate = A.measure_rate(c, 2.5)

        def wrapped(ctx: A.Context) -> None:
            ctx.observe_s = OBSERVE
            if min_rate is not None:
                ctx.min_rate = min_rate
            fn(ctx)
        row = A.run_attack(c, name, who, wrapped, self.sink, True, self.rate, background=background)
        print(A.summary(row))
        self.damaged = not row.ok
        return row

    def close(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        self.sink.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    lv = Live(tmp_path_factory.mktemp("security"))
    try:
        yield lv
    finally:
        lv.close()


@pytest.fixture(scope="module")
def connections(live):
    """An idle and a slowloris connection opened at the start of the module, checked at its end."""
    c = live.get()
    out: dict[str, dict] = {"idle": {}, "slow": {}}
    threads = [threading.Thread(target=A._hold_connection, args=(c.honest[0].url, k == "slow", CONNECTION_BOUND, o),
                                daemon=True) for k, o in out.items()]
    for t in threads:
        t.start()
    yield out, threads, time.monotonic(), live.n


def assert_defended(row: A.Row, must_reject: bool = True) -> None:
    assert not row.changed, f"{row.name} [{row.who}] changed honest state: {row.changed}; {row.notes}"
    assert row.rate_ratio is not None and row.rate_ratio > 0, "honest learning stopped during the attack"
    assert not row.codes.get(500), f"server errors: {row.codes}"
    if must_reject:
        assert row.reasons, f"{row.name} [{row.who}]: nothing was counted as rejected ({row.codes})"


def test_connections_are_opened(connections) -> None:
    out, threads, _, _ = connections
    assert all(t.is_alive() or o.get("closed_after") is not None for t, o in zip(threads, out.values(), strict=True))


@pytest.mark.parametrize(("who", "ahead"), [("fresh", 1), ("member", 1), ("member", 5)])
def test_unsolicited_aggregated_model_is_not_adopted(live, who, ahead) -> None:
    # In this 3-node cluster the member is always a role-valid aggregator (rank < 1 + slack 2):
    # its models pass the role checks, so model sanity and the adoption check must stop them.
    row = live.attack(f"AGGREGATED R+{ahead}", who, A.atk_aggregated(ahead))
    assert_defended(row)
    if who == "fresh":
        assert row.accepted == 0, row.codes
    else:  # rank checks answer 202 before the check completes; what counts is no adoption
        assert row.reasons.get("worse_model") or row.reasons.get("degenerate_model"), row.reasons


@pytest.mark.parametrize("who", ["fresh", "member"])
def test_trained_nan_update_does_not_freeze_learning(live, who) -> None:
    row = live.attack("TRAINED NaN", who, A.atk_trained_nan)
    assert_defended(row)
    assert row.accepted == 0, row.codes


@pytest.mark.parametrize("who", ["fresh", "member"])
def test_forged_leave_records_split_nobody(live, who) -> None:
    assert_defended(live.attack("LEAVE for every peer", who, A.atk_leave_all))


def test_keyless_peers_stay_out_of_the_view(live) -> None:
    assert_defended(live.attack("3,000 keyless peers", "fresh", A.atk_keyless(3000)))


def test_address_redirection_sends_nothing_to_the_attacker(live) -> None:
    row = live.attack("address redirection", "member", A.atk_redirect)
    assert_defended(row)


def test_max_last_active_moves_no_round_estimate(live) -> None:
    assert_defended(live.attack("last_active 2^63-1", "member", A.atk_last_active))


def test_join_flood_keeps_rounds_going(live) -> None:
    row = live.attack("ADVERTISE flood, 200 keys", "fresh", A.atk_flood(200), min_rate=0.5)
    assert_defended(row, must_reject=False)


def test_huge_history_shape_is_malformed(live) -> None:
    row = live.attack("history (0, 2^62, 2^62)", "fresh", A.atk_history_shape)
    assert_defended(row)
    assert row.reasons.get("malformed"), row.reasons


def test_gossip_kind_model_is_no_server_error(live) -> None:
    assert_defended(live.attack("GOSSIP kind to MoDeST", "fresh", A.atk_gossip_kind), must_reject=False)


@pytest.mark.parametrize("who", ["fresh", "member"])
def test_model_request_reply_to_is_not_reflected(live, who) -> None:
    row = live.attack("MODEL_REQUEST reply-to", who, A.atk_reply_to(10))
    assert_defended(row, must_reject=False)
    assert any("sink got 0 B" in n for n in row.notes), row.notes


def test_concurrent_big_bodies_keep_memory_bounded(live) -> None:
    row = live.attack("8 x 32 MB bodies", "fresh", A.atk_big_bodies(8, 32))
    assert_defended(row, must_reject=False)


def test_idle_and_slowloris_connections_are_closed(live, connections) -> None:
    out, threads, t0, generation = connections
    assert live.n == generation, "the cluster was replaced after a failed test: its connections were cut"
    for t in threads:
        t.join(max(0.0, CONNECTION_BOUND + 5 - (time.monotonic() - t0)))
    for kind, o in out.items():
        assert o.get("closed_after") is not None, f"{kind} connection still open after {CONNECTION_BOUND} s"


# Last on purpose: the member that aggregated with a poisoned model keeps it as its own current
# model, so from then on every update it trains is garbage and every round it aggregates is
# wasted. The defence holds (nothing of it is adopted), but the tests above measure each attack
# on a network whose member is otherwise honest; run after this one they saw 4-s windows without
# honest progress (measured: 1 run in 3).
def test_member_aggregator_replacing_the_model_is_not_adopted(live) -> None:
    attack = A.atk_malicious_aggregator("replace")

    def long(ctx: A.Context) -> None:
        # Watched for 30 s: a refused round model stalls that round until the stall restart
        # (3 x --round-timeout 8 s), after which honest rounds must go on.
        ctx.observe_s = 15.0
        attack(ctx)
    row = live.attack("malicious aggregator (replace)", "member", long, background=True)
    assert row.tried > 0, "the member was never sampled as an aggregator while watched"
    assert_defended(row, must_reject=False)
    assert row.reasons.get("worse_model"), row.reasons
