"""Several real node processes over real HTTP on loopback learn MNIST-1D, and survive crashes."""
from __future__ import annotations

import pytest

from conftest import statuses, wait_for

pytestmark = pytest.mark.slow

FAST = ["--mnist1d-samples", "4000", "--bootstrap-wait", "2", "--ping-timeout", "2",
        "--aggregation-timeout", "6", "--round-timeout", "15", "--log-level", "info"]


def test_five_nodes_learn_then_survive_crash_of_most(node_procs) -> None:
    nodes = node_procs(5, FAST + ["--sample-size", "4", "--success-fraction", "0.75",
                                  "--inactivity-threshold", "4"])
    for n in nodes:
        n.wait_up()

    def mean_acc() -> float:
        accs = [s["last_eval"]["accuracy"] for s in statuses(nodes) if s and s["last_eval"]
                and s["last_eval"]["round"] > 0]
        return sum(accs) / len(accs) if len(accs) == len(nodes) else 0.0

    # Stated bar: mean test accuracy >= 0.80 on MNIST-1D (4000 samples, 5 iid shards).
    wait_for(lambda: mean_acc() >= 0.80, 240, "mean accuracy >= 0.80", nodes)
    st = statuses(nodes)
    assert all(s["peers_known"] == 4 for s in st)
    assert sum(s["rounds_aggregated"] for s in st) >= 3
    # Honest nodes reject nothing but what honest timing explains: a round model refused by the
    # adoption check (SPEC 15, worse_model), as an aggregator the updates trained from such a
    # model (unfit_base, the same refusal a round later), and hearsay rounds above the window
    # after a probe (SPEC 4.1); anything else (bad signatures, role or sanity failures) is a bug.
    rejected = [s["messages_rejected"] for s in st]
    assert all(set(r) <= {"worse_model", "unfit_base", "round_out_of_range"} for r in rejected), rejected

    # Crash three of five (60 %) with SIGKILL: no LEAVE is sent.
    for n in nodes[:3]:
        n.kill()
    survivors = nodes[3:]
    r0 = max(s["round"] for s in statuses(survivors))
    wait_for(lambda: max(s["round"] for s in statuses(survivors)) >= r0 + 5, 180,
             "5 more rounds after the crash", survivors)
    # Two 800-sample shards now train each round model, and one evaluation swings by several
    # points (measured after 5 rounds: 0.80-0.86 in 3 runs, 0.70 once in CI): the survivors
    # must evaluate at 0.75 or more again on a round model made after the crash.
    def held() -> bool:
        return all(s and s["last_eval"]["round"] > r0 and s["last_eval"]["accuracy"] >= 0.75
                   for s in statuses(survivors))
    wait_for(held, 120, "accuracy >= 0.75 after the crash", survivors)
    print("before the crash", [x["last_eval"]["accuracy"] for x in st],
          "after", [s["last_eval"] for s in statuses(survivors)])


def test_lone_survivor_restarts_rounds_after_round_one_sample_crashes(node_procs) -> None:
    """All of round 1's sample is SIGKILLed during the bootstrap phase. The one left is not in
    that sample, so nothing would ever reach it and no timer of its own would fire: after
    --stall-timeout it pings round 1's candidates, finds nobody, and restarts round 1 alone."""
    from conftest import get_json
    from gossipnode.core.sampling import sample

    nodes = node_procs(3, ["--mnist1d-samples", "2000", "--bootstrap-wait", "25", "--ping-timeout", "1",
                           "--aggregation-timeout", "4", "--round-timeout", "5", "--stall-timeout", "4",
                           "--inactivity-threshold", "2", "--sample-size", "2", "--log-level", "info"])
    for n in nodes:
        n.wait_up()
    wait_for(lambda: all(s and s["peers_known"] == 2 for s in statuses(nodes)), 20, "all peers known", nodes)
    st = statuses(nodes)
    assert all(s["round"] == 0 for s in st), "bootstrap already over: the set-up needs it running"
    pks = [bytes.fromhex(s["public_key"]) for s in st]
    first = set(sample(pks, 1, 2))
    lone = next(n for n, pk in zip(nodes, pks, strict=True) if pk not in first)
    for n, pk in zip(nodes, pks, strict=True):
        if pk in first:
            n.kill()
    wait_for(lambda: lone.status()["round"] >= 5, 120, "5 rounds on the lone survivor", [lone])
    s = lone.status()
    # at round 5 it trained 4 rounds and aggregated at least 3 (one aggregation may still be
    # running, or have been taken early from a partial sample: SPEC 15.5)
    assert s["rounds_trained"] >= 4 and s["rounds_aggregated"] >= 3, s
    events = [e["kind"] for r in get_json(lone.url + "/v1/rounds")["rounds"] for e in r["events"]]
    assert events.count("restart") == 1 and "stalled" in events
