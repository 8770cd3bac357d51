"""Honest update-norm ratios on MNIST-1D: what `--max-update-norm` must never reject.

The ratio is `gossipnode.learn.sanity.update_ratio`: ||model - reference|| / ||reference||
over the weights. Runs honest simulations (the daemon's pipeline: sybilwall, mean, vc) and
records, at every aggregation or merge:

* `trained`: each TRAINED model against its base (what a MoDeST aggregator checks);
* `agg_vs_base`: the aggregated model against the round's base (a trainer that holds it);
* `agg_vs_initial`: the aggregated model against the initial model (the worst honest case:
  a fresh joiner, or a node that missed every round, receives the network's model);
* `gossip_vs_own`: a received GOSSIP model against the receiver's own (`--independent-init`).

    .venv/bin/python benchmarks/update_norms.py [ROUNDS]    # default 40 (about 30 s on 1 core)

A diverging run (e.g. cnn1d at lr 0.2, 4x the default, after some 50 rounds) produces NaN and
ever larger models: exactly what the check is for, so such runs are not "honest" here.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict

from gossipnode.learn.sanity import DEFAULT_MAX_UPDATE_NORM, update_ratio
from gossipnode.sim.config import SimConfig
from gossipnode.sim.run import make_engine


def measure(cfg: SimConfig) -> tuple[dict[str, list[float]], dict]:
    eng = make_engine(cfg)
    seen: dict[str, list[float]] = defaultdict(list)
    orig = eng.aggregate

    def aggregate(i, round_, contributions, own=None, beta=0.5):
        h = orig(i, round_, contributions, own=own, beta=beta)
        out = eng.models[h]
        if own is None:
            for _, c in contributions:
                p = eng.parent.get(c)
                if p is not None:
                    seen["trained"].append(update_ratio(eng.models[c], eng.models[p]))
            base = eng.parent.get(h)
            if base is not None:
                seen["agg_vs_base"].append(update_ratio(out, eng.models[base]))
            seen["agg_vs_initial"].append(update_ratio(out, eng.models[eng.initial_of(i)]))
        else:
            for _, c in contributions:
                seen["gossip_vs_own"].append(update_ratio(eng.models[c], eng.models[own]))
        return h

    eng.aggregate = aggregate  # type: ignore[method-assign]
    res = eng.run()
    return seen, res["summary"]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    # max_update_norm=0: measure the unchecked run (the simulator applies the check otherwise)
    common = {"filter": "sybilwall", "correct": "vc", "eval_nodes": 5, "max_update_norm": 0.0}
    runs = {
        "modest cnn1d": SimConfig(protocol="modest", nodes=20, sample_size=5, rounds=rounds, **common),
        "modest mlp": SimConfig(protocol="modest", model="mlp", nodes=20, sample_size=5, rounds=rounds,
                                **common),
        "modest cnn1d lr=0.1 non-iid": SimConfig(protocol="modest", nodes=20, sample_size=5, rounds=rounds,
                                                 lr=0.1, partition="dirichlet:0.1", **common),
        "gossip cnn1d independent init": SimConfig(protocol="gossip", nodes=10, init="independent",
                                                   rounds=None, duration=60.0 * rounds / 2, **common),
    }
    overall = 0.0
    for name, cfg in runs.items():
        t0 = time.perf_counter()
        seen, summary = measure(cfg)
        print(f"{name}: rounds {summary['rounds_completed']}, final accuracy "
              f"{summary['final_acc_mean']}, {time.perf_counter() - t0:.0f} s")
        for kind, vals in sorted(seen.items()):
            overall = max(overall, max(vals))
            vals = sorted(vals)
            print(f"  {kind:15s} n={len(vals):5d} median {vals[len(vals) // 2]:.4f} max {vals[-1]:.4f}")
    print(f"max honest ratio seen: {overall:.4f}; default --max-update-norm {DEFAULT_MAX_UPDATE_NORM:g}")


if __name__ == "__main__":
    main()
