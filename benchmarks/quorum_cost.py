"""What the adoption quorum costs, and what it buys, side by side in one run.

1. Cost (the simulator, real training on MNIST-1D, same seed): a = 1, q = 1 against a = 3, q = 2
   over the same number of rounds: virtual time, bytes, accuracy, and their ratios.
2. Benefit in the simulator: one label-flip Sybil identity that, when sampled to aggregate,
   sends its poisoned model instead of the aggregate (`--sybil-aggregate replace`), against one
   that aggregates honestly (`--combine median`, so its poisoned updates alone do little):
   honest accuracy and attack rate, a = 1, q = 1 and a = 3, q = 2. Then the limit: with 10 %
   Sybils, rounds in which 2 of the 3 aggregators are Sybils (they send the same poisoned hash,
   a quorum of 2) poison the model anyway: q must exceed the malicious aggregators of a round.
3. Benefit (the core harness, every node honest but one legitimately sampled aggregator that
   sends a model of its own instead of the aggregate): honest nodes that adopted or trained
   the bad model, with a = 1, q = 1 and with a = 3, q = 2.

    .venv/bin/python benchmarks/quorum_cost.py [NODES] [ROUNDS] [SEED]   # default 40 nodes, 30 rounds, seed 0
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from core_harness import CoreNet, pk_of  # noqa: E402
from gossipnode.core.actions import NewModel, StartTraining  # noqa: E402
from gossipnode.core.config import ModestConfig  # noqa: E402
from gossipnode.sim.config import SimConfig  # noqa: E402
from gossipnode.sim.run import make_engine, run_sim  # noqa: E402

BAD = b"\xee" * 32


class EvilNet(CoreNet):
    evil = b""

    def _push(self, t, kind, pk, payload) -> None:
        if kind == "aggregated" and pk == self.evil:
            payload = (payload[0], BAD)   # the sampled aggregator sends its own model
        super()._push(t, kind, pk, payload)


def attack(a: int, q: int, seed: int) -> tuple[int, int, int]:
    cfg = ModestConfig(sample_size=4, aggregators=a, accept_quorum=q, ping_timeout=2.0, bootstrap_wait=1.0,
                       aggregation_timeout=10.0, round_timeout=20.0)
    net = EvilNet(10, cfg, train_time=0.5, seed=seed)
    net.evil = pk_of(3)
    net.start()
    net.run_until(300.0)
    honest = [pk for pk in net.cores if pk != net.evil]
    victims = {pk for t, pk, x in net.events if pk in honest and (
        (isinstance(x, NewModel) and x.model == BAD) or (isinstance(x, StartTraining) and x.model == BAD))}
    evil_rounds = sum(1 for aggs in net.aggregations.values() for pk, _ in aggs if pk == net.evil)
    return len(victims), evil_rounds, net.max_round()


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    res = {}
    for a, q in ((1, 1), (3, 2)):
        cfg = SimConfig(nodes=nodes, rounds=rounds, seed=seed, sample_size=10, aggregators=a, accept_quorum=q,
                        mnist1d_samples=4000, eval_samples=500)
        t0 = time.perf_counter()
        s = run_sim(cfg)["summary"]
        res[(a, q)] = s
        print(f"sim a={a} q={q}: {s['rounds_completed']} rounds in {s['virtual_time_s']:.1f} s virtual, "
              f"{s['bytes_total'] / 1e6:.1f} MB, final accuracy {s['final_acc_mean']:.3f}, "
              f"events {s['protocol_events']} ({time.perf_counter() - t0:.0f} s wall)")
    b, q2 = res[(1, 1)], res[(3, 2)]
    def per_round(s: dict, key: str) -> float:
        return s[key] / max(1, s["rounds_completed"])

    print(f"ratio a=3,q=2 / a=1,q=1: time per round "
          f"x{per_round(q2, 'virtual_time_s') / per_round(b, 'virtual_time_s'):.2f}, "
          f"bytes per round x{per_round(q2, 'bytes_total') / per_round(b, 'bytes_total'):.2f}, "
          f"final accuracy {q2['final_acc_mean'] - b['final_acc_mean']:+.3f}")
    for a, q in ((1, 1), (3, 2)):
        for phi, how in ((1 / nodes, "honest"), (1 / nodes, "replace"), (0.1, "replace")):
            cfg = SimConfig(nodes=nodes, rounds=rounds, seed=seed, sample_size=10, aggregators=a, accept_quorum=q,
                            mnist1d_samples=4000, eval_samples=500, attack="label-flip", sybils=phi,
                            sybil_aggregate=how, combine="median", extra={"keep_logs": True})
            sim = make_engine(cfg)
            s = sim.run()["summary"]
            aggs: dict[int, set[int]] = {}
            for e in sim.agg_log:
                aggs.setdefault(e["round"], set()).add(e["aggregator"])
            two = sum(1 for v in aggs.values() if len(v & set(sim.sybil_ids)) >= 2)
            print(f"sim {s['sybils']} label-flip Sybil(s) aggregating {how:7s} a={a} q={q}: final accuracy "
                  f"{s['final_acc_mean']:.3f}, attack rate {s['final_attack_rate']:.3f}, {s['rounds_completed']} "
                  f"rounds, {two} rounds with >= 2 Sybil aggregators")
    for a, q in ((1, 1), (3, 2)):
        victims, evil_rounds, r = attack(a, q, seed)
        print(f"one malicious aggregator, a={a} q={q}: {victims} of 9 honest nodes adopted or trained its model "
              f"(it was sampled to aggregate {evil_rounds} times; the network reached round {r})")


if __name__ == "__main__":
    main()
