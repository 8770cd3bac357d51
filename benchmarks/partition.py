"""Partitions of 6 real node processes (issue 14, SPEC 15.5): each node on its own loopback
address behind a fault-injecting proxy (tests/fault_proxy.py; no root, no nftables). Scenarios:
a short 3/3 cut, a 3/3 and a 1/5 cut of --cut seconds (longer than tau rounds), and a 3/3 cut
with a small tau (--inactivity-threshold 10). Prints a table: rounds per part, the pace of each
part after the cut's first minute against the pace before, time from the heal to one network,
accuracy before / at / one minute after the heal, merge events. On a small machine all nodes
share the CPU: "parts together" (the sum of the parts' paces against the pace before) shows
whether a part's pace is bounded by the protocol or by the CPU the other part uses.

    PYTHONPATH=$PWD python benchmarks/partition.py [--cut 240] [--short 20] [--scenarios a,b,c,d]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import get_json, statuses  # noqa: E402
from fault_proxy import start_cluster  # noqa: E402

# the set-up: sample size 3, otherwise default time-outs (ping 5 s, aggregation 30 s)
ARGS = ["--mnist1d-samples", "4000", "--bootstrap-wait", "3", "--sample-size", "3", "--log-level", "info"]
SCENARIOS = {
    "a": ("3/3 short", [3, 3], "short", []),
    "b": ("3/3", [3, 3], "cut", []),
    "c": ("1/5", [1, 5], "cut", []),
    "d": ("3/3 tau=10", [3, 3], "cut", ["--inactivity-threshold", "10"]),
}


def _st(nodes) -> list[dict]:
    return [s for s in statuses(nodes) if s]


def _top(nodes) -> int:
    return max((s["round"] for s in _st(nodes)), default=-1)


def _acc(nodes, agg=max) -> float | None:
    a = [s["last_eval"]["accuracy"] for s in _st(nodes) if s.get("last_eval")]
    return round(agg(a), 4) if a else None


def _one_network(nodes, spread: int) -> bool:
    st = _st(nodes)
    rs = [s["round"] for s in st]
    return (len(st) == len(nodes) and all(s["peers_active"] == len(nodes) - 1 and not s.get("peers_unreachable")
                                          for s in st) and max(rs) - min(rs) <= spread)


def run(name: str, sizes: list[int], cut_s: float, extra: list[str], base: int, warm: float = 30.0) -> dict:
    with tempfile.TemporaryDirectory() as d:
        nodes, part, hosts = start_cluster(Path(d), sum(sizes), base, ARGS + extra)
        try:
            for x in nodes:
                x.wait_up(180)
            t0 = time.monotonic()
            while min((s["round"] for s in _st(nodes)), default=0) < 3 and time.monotonic() - t0 < 240:
                time.sleep(1)
            r0, t0 = _top(nodes), time.monotonic()
            time.sleep(warm)
            pre = (_top(nodes) - r0) / (time.monotonic() - t0)
            acc_before = _acc(nodes, statistics.mean)
            groups, i = [], 0
            for n in sizes:
                groups.append(nodes[i:i + n])
                i += n
            hosts_of = {id(x): h for x, h in zip(nodes, hosts, strict=True)}
            part.cut(*[[hosts_of[id(x)] for x in g] for g in groups])
            t_cut = time.monotonic()
            at_cut = [_top(g) for g in groups]
            first = min(60.0, cut_s / 3)       # the pace is measured after the first minute
            time.sleep(first)
            mid = [_top(g) for g in groups]
            t_mid = time.monotonic()
            time.sleep(max(0.0, t_cut + cut_s - time.monotonic()))
            end = [_top(g) for g in groups]
            rates = [(e - m) / (time.monotonic() - t_mid) for e, m in zip(end, mid, strict=True)]
            acc_heal = [_acc(g) for g in groups]
            part.heal()
            t_heal = time.monotonic()
            merged_s = None
            while time.monotonic() - t_heal < 120:
                if _one_network(nodes, 6):
                    merged_s = round(time.monotonic() - t_heal, 1)
                    break
                time.sleep(1)
            time.sleep(max(0.0, t_heal + 60 - time.monotonic()))
            acc_after = _acc(nodes, statistics.mean)
            merges = sum(1 for x in nodes for r in get_json(x.url + "/v1/rounds?limit=1000")["rounds"]
                         for e in r["events"] if e["kind"] == "merge")
            return {"scenario": name, "cut_s": cut_s, "pre_rate": round(pre, 3),
                    "rounds_at_cut": at_cut, "rounds_at_heal": end,
                    "rate_after_first_minute": [round(r, 3) for r in rates],
                    "pace_ratio": [round(r / pre, 2) if pre else None for r in rates],
                    "heal_to_one_network_s": merged_s, "acc_before": acc_before,
                    "acc_at_heal_per_part": acc_heal, "acc_60s_after": acc_after,
                    "better_part_minus_after": (round(max(a for a in acc_heal if a is not None) - acc_after, 4)
                                                if acc_after is not None and any(acc_heal) else None),
                    "merge_events": merges, "proxy_dropped_bytes": sum(p.dropped for p in part.proxies)}
        finally:
            for x in nodes:
                x.kill()
            part.close()


def table(rows: list[dict]) -> str:
    out = ["| scenario | cut | rounds/s before | rounds per part at cut -> heal | pace after 1st min (x before) "
           "| parts together (x before) | heal -> one network | acc before / at heal (parts) / +60 s | merges |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        parts = ", ".join(f"{a} -> {b}" for a, b in zip(r["rounds_at_cut"], r["rounds_at_heal"], strict=True))
        h = r["heal_to_one_network_s"]
        healed = f"{h} s" if h is not None else "not in 120 s"
        out.append(f"| {r['scenario']} | {r['cut_s']:.0f} s | {r['pre_rate']} | {parts} | "
                   f"{' / '.join(map(str, r['pace_ratio']))} | "
                   f"{round(sum(r['rate_after_first_minute']) / r['pre_rate'], 2) if r['pre_rate'] else '-'} | "
                   f"{healed} | "
                   f"{r['acc_before']} / {' , '.join(map(str, r['acc_at_heal_per_part']))} / {r['acc_60s_after']} | "
                   f"{r['merge_events']} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cut", type=float, default=240.0, help="seconds of the long cuts")
    ap.add_argument("--short", type=float, default=20.0, help="seconds of the short cut")
    ap.add_argument("--scenarios", default="a,b,c,d", help="comma-separated of " + ", ".join(
        f"{k}: {v[0]}" for k, v in SCENARIOS.items()))
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    rows = []
    for j, key in enumerate(a.scenarios.split(",")):
        name, sizes, which, extra = SCENARIOS[key.strip()]
        rows.append(run(name, sizes, a.short if which == "short" else a.cut, extra, base=40 + 10 * j))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
