"""A member that poisons every round it aggregates, in a live 3-node cluster: honest accuracy
in windows with the attack next to windows without it, in one run.

The cluster is benchmarks/attacks.py's (2 `gossipnode start` processes and a member node run in
this process, MNIST-1D on 127.0.0.1). In a "replace" window the member sends a poisoned model
(output bias shifted) as the round's aggregate whenever it is sampled to aggregate, adopts that
model itself and trains from it; in a "none" window it is honest. For each window: the honest
nodes' accuracy before and after, the lowest and the mean of their evaluations during it, and the
rejections counted (`worse_model`: the poisoned model refused; `unfit_base`: an update trained
from it left out by an aggregator, SPEC 15).

    python benchmarks/member_aggregator.py                       # none, replace x 3, 30 s each
    python benchmarks/member_aggregator.py --windows none,replace --seconds 20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import attacks as A  # noqa: E402


def _evals(c: A.Cluster, after: int) -> list[list[float]]:
    out = []
    for h in c.honest:
        rs = A.get_json(h.url + "/v1/rounds?limit=1000")["rounds"]
        out.append([r["accuracy"] for r in rs if r["round"] > after and r.get("accuracy") is not None])
    return out


def _rejected(c: A.Cluster) -> Counter:
    n: Counter = Counter()
    for s in c.statuses():
        if s:
            n.update(s["messages_rejected"])
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", default="none,replace,replace,replace", help="none / replace / drop, in order")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each window")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        c = A.Cluster(Path(tmp), n_honest=2, extra=["--rounds", "100000"], tag="m")
        c.start()
        try:
            c.wait_ready(min_round=3, min_acc=0.45, timeout=60)
            assert c.member is not None
            print("| window | accuracy before | after | lowest during | mean during | evaluations | "
                  "member aggregated | worse_model | unfit_base |")
            print("|---|---|---|---|---|---|---|---|---|")
            for mode in a.windows.split(","):
                st = c.statuses()
                before = [s["last_eval"]["accuracy"] for s in st if s and s.get("last_eval")]
                r0, rej0 = max(s["model_round"] for s in st if s), _rejected(c)
                agg0 = c.member.node.telemetry.rounds_aggregated
                c.member.poison_aggregation = "" if mode == "none" else mode
                time.sleep(a.seconds)
                c.member.poison_aggregation = ""
                after = [s["last_eval"]["accuracy"] for s in c.statuses() if s and s.get("last_eval")]
                seq = [x for h in _evals(c, r0) for x in h]
                rej = _rejected(c) - rej0
                low, mean = (min(seq), statistics.mean(seq)) if seq else (float("nan"), float("nan"))
                print(f"| {mode} | {statistics.mean(before):.3f} | {statistics.mean(after):.3f} | "
                      f"{low:.3f} | {mean:.3f} | "
                      f"{len(seq)} | {c.member.node.telemetry.rounds_aggregated - agg0} | "
                      f"{rej.get('worse_model', 0)} | {rej.get('unfit_base', 0)} |", flush=True)
        finally:
            c.stop()


if __name__ == "__main__":
    main()
