#!/usr/bin/env python3
"""Reproduce the papers' claims at reduced scale with `gossipnode sim`.

    .venv/bin/python scripts/experiments.py compare|churn|sybil|variance|scale|vcmatrix|vcregular|all [--quick] [--out DIR]
    .venv/bin/python scripts/experiments.py vcmatrix --seeds 0,1 --rounds 200 --nodes 3,10   # reduced
    .venv/bin/python scripts/experiments.py report      # docs/RESULTS.md from the fragments

Every run is recorded with the exact `gossipnode sim ...` command that reproduces it (the script
runs the same code in-process). Results: DIR/<exp>.json, DIR/<exp>.png, DIR/<exp>.md.
``--quick`` shrinks everything to seconds (used by tests/test_sim_experiments.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gossipnode.sim import SimConfig, run_sim  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "results"
# Sections 1-5 of docs/RESULTS.md were produced before the simulator took the daemon's defaults
# (sybilwall -> mean -> vc): they ran without a filter or a correction, and say so explicitly.
PUBLISHED = {"filter": "none", "correct": "none"}


def command(cfg: SimConfig) -> str:
    """The `gossipnode sim` command line for cfg (non-default options only)."""
    parts = ["gossipnode sim"]
    for f in fields(SimConfig):
        if f.name == "extra":
            continue
        v, d = getattr(cfg, f.name), f.default
        if f.name == "rounds" and cfg.duration is not None and v is None:
            continue
        if v != d or (f.name == "rounds" and v is not None):
            parts.append(f"--{f.name.replace('_', '-')} {v}")
    return " ".join(parts)


def run(cfg: SimConfig, label: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = run_sim(cfg)
    s = res["summary"]
    print(f"  {label:38s} rounds={s['rounds_completed']:4d} t={s['virtual_time_s']:8.1f}s "
          f"acc={s['final_acc_mean']:.3f} MB={s['bytes_total'] / 1e6:8.2f} wall={time.perf_counter() - t0:6.1f}s",
          flush=True)
    res["label"] = label
    res["command"] = command(cfg)
    return res


def fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def mb(v: Any) -> str:
    return "—" if v is None else f"{v / 1e6:.2f}"


def plot_runs(runs: list[dict[str, Any]], path: Path, title: str, x: str = "t") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for r in runs:
        s = r["series"]
        ax[0].plot([p[x] for p in s], [p["acc_mean"] for p in s], label=r["label"])
        ax[1].plot([p[x] for p in s], [p["bytes_total"] / 1e6 for p in s], label=r["label"])
    ax[0].set(xlabel="virtual time (s)" if x == "t" else x, ylabel="mean honest test accuracy")
    ax[1].set(xlabel="virtual time (s)" if x == "t" else x, ylabel="MB sent (all nodes)", yscale="log")
    ax[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def save(out: Path, name: str, runs: list[dict[str, Any]], md: list[str], argv: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(runs, indent=1))
    cmds = ["", "Commands (one per row, in order):", "", "```"] + [r["command"] for r in runs] + ["```", ""]
    head = [f"Produced by `{argv}` (JSON: `{name}.json`, plot: `{name}.png`).", ""]
    (out / f"{name}.md").write_text("\n".join(head + md + cmds))


# ---- experiments ----------------------------------------------------------------------------------
def exp_compare(out: Path, quick: bool, argv: str) -> None:
    """MoDeST vs FL vs D-PSGD vs gossip at 100 nodes: time and bytes to a target accuracy."""
    n = 12 if quick else 100
    base = SimConfig(nodes=n, rounds=None, duration=12.0 if quick else 600.0, sample_size=4 if quick else 10,
                     target=0.3 if quick else 0.6,
                     stop_at_target=1, eval_samples=300 if quick else 1000, eval_every=2.0 if quick else 5.0,
                     eval_nodes=5 if quick else 10, mnist1d_samples=4000 if quick else 0, **PUBLISHED)
    runs = [
        run(replace(base, protocol="modest"), "modest (s=10)"),
        run(replace(base, protocol="fl"), "fl (FedAvg, 10 clients/round)"),
        run(replace(base, protocol="dpsgd", topology="exp"), "dpsgd (one-peer exponential)"),
        run(replace(base, protocol="dpsgd", topology="ring"), "dpsgd (ring)"),
        run(replace(base, protocol="gossip", gossip_interval=1.0), "gossip (push every 1 s)"),
    ]
    plot_runs(runs, out / "compare.png", f"{n} nodes, MNIST-1D iid, target {base.target}")
    ref = next(r for r in runs if r["label"].startswith("modest"))["summary"]["bytes_to_target"]
    md = [f"| protocol | time to {base.target} (virtual s) | rounds | MB to target | vs MoDeST bytes | final acc |",
          "|---|---|---|---|---|---|"]
    for r in runs:
        s = r["summary"]
        ratio = (f"{s['bytes_to_target'] / ref:.1f}x" if ref and s["bytes_to_target"] else "—")
        md.append(f"| {r['label']} | {fmt(s['time_to_target_s'], 1)} | {fmt(s['round_to_target'])} | "
                  f"{mb(s['bytes_to_target'])} | {ratio} | {fmt(s['final_acc_mean'])} |")
    save(out, "compare", runs, md, argv)


def exp_churn(out: Path, quick: bool, argv: str) -> None:
    """100 nodes, 5 crash every 60 s from 300 s, 16 times (80 %), sf = 0.8; and with joins."""
    if quick:
        base = SimConfig(nodes=20, rounds=None, duration=40.0, churn="crash:2:4:10:6", success_fraction=0.8,
                         ping_timeout=2.0, inactivity_threshold=20, mnist1d_samples=4000, eval_samples=200,
                         eval_every=5.0, sample_size=4, **PUBLISHED)
        joins = "crash:2:4:10:6,join:2:4:14:3"
    else:
        # compute 20 samples/s: 4 s of training per round, so ~300 rounds fit in the 1,500 s schedule
        base = SimConfig(nodes=100, rounds=None, duration=1500.0, churn="crash:5:60:300:16",
                         success_fraction=0.8, ping_timeout=2.0, inactivity_threshold=20, compute="const:20",
                         eval_samples=1000, eval_every=30.0, **PUBLISHED)
        joins = "crash:5:60:300:16,join:5:60:600:8"
    runs = [run(replace(base, churn=""), "no churn"),
            run(base, "crash 80 %"),
            run(replace(base, churn=joins), "crash 80 % + joins"),
            # the daemon's stall restart (off in the paper's protocol): 0 = 3 x round timeout
            run(replace(base, stall_timeout=0.0), "crash 80 %, stall restart on")]
    plot_runs(runs, out / "churn.png", "MoDeST under churn (crashes from t=300 s)")
    md = [("| scenario | rounds completed | rounds after first crash | acc at first crash | final acc | "
          "alive at end |"), "|---|---|---|---|---|---|"]
    t_first = float(base.churn.split(":")[3])
    for r in runs:
        s = r["summary"]
        before = [p for p in r["series"] if p["t"] <= t_first]
        b = before[-1] if before else r["series"][0]
        md.append(f"| {r['label']} | {s['rounds_completed']} | {s['rounds_completed'] - b['round']} | "
                  f"{fmt(b['acc_mean'])} | {fmt(s['final_acc_mean'])} | {s['active_nodes_end']} |")
    save(out, "churn", runs, md, argv)


def exp_sybil(out: Path, quick: bool, argv: str) -> None:
    """Label flip and backdoor; phi in {0.1, 0.5, 1, 2}; filters none/median/krum/foolsgold/sybilwall."""
    phis = [0.5, 2.0] if quick else [0.1, 0.5, 1.0, 2.0]
    filters = ["none", "sybilwall"] if quick else ["none", "median", "krum", "foolsgold", "sybilwall"]
    attacks = ["label-flip"] if quick else ["label-flip", "backdoor"]
    base = SimConfig(protocol="dpsgd", nodes=8 if quick else 16, rounds=2 if quick else 10,
                     topology="regular:4", partition="dirichlet:0.5", mnist1d_samples=4000,
                     eval_samples=300 if quick else 1000, eval_nodes=8 if quick else 16, **PUBLISHED)
    runs = []
    for attack in attacks:
        # the no-attack baseline measures the same attack rate (what an untouched model does)
        runs.append(run(replace(base, eval_attack=attack), "no attack"))
        for phi in phis:
            for f in filters:
                kw: dict[str, Any] = {"filter": f}
                if f == "median":
                    kw = {"filter": "none", "combine": "median"}
                runs.append(run(replace(base, attack=attack, sybils=phi, **kw), f"{attack} phi={phi} {f}"))
    md = ["| attack | phi | filter | honest acc | attack rate | no-attack baseline: acc / rate |",
          "|---|---|---|---|---|---|"]
    baseline: dict[str, Any] = {}
    for r in runs:
        c, s = r["config"], r["summary"]
        if c["attack"] == "none":
            baseline = s
            md.append(f"| none (baseline for {c.get('eval_attack') or '—'}) | 0 | {c['filter']} | "
                      f"{fmt(s['final_acc_mean'])} | {fmt(s['final_attack_rate'])} | — |")
            continue
        filt = "median" if c["combine"] == "median" else c["filter"]
        md.append(f"| {c['attack']} | {c['sybils']} | {filt} | {fmt(s['final_acc_mean'])} | "
                  f"{fmt(s['final_attack_rate'])} | {fmt(baseline.get('final_acc_mean'))} / "
                  f"{fmt(baseline.get('final_attack_rate'))} |")
    _plot_sybil(runs, out / "sybil.png")
    save(out, "sybil", runs, md, argv)


def _plot_sybil(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = sorted({r["config"]["attack"] for r in runs if r["config"]["attack"] != "none"})
    fig, ax = plt.subplots(len(attacks), 2, figsize=(12, 4 * len(attacks)), squeeze=False)
    for a_i, attack in enumerate(attacks):
        sel = [r for r in runs if r["config"]["attack"] == attack]
        filters = list(dict.fromkeys("median" if r["config"]["combine"] == "median" else r["config"]["filter"]
                                     for r in sel))
        for f in filters:
            pts = [(r["config"]["sybils"], r["summary"]) for r in sel
                   if ("median" if r["config"]["combine"] == "median" else r["config"]["filter"]) == f]
            ax[a_i][0].plot([p for p, _ in pts], [s["final_acc_mean"] for _, s in pts], "o-", label=f)
            ax[a_i][1].plot([p for p, _ in pts], [s["final_attack_rate"] for _, s in pts], "o-", label=f)
        ax[a_i][0].set(title=f"{attack}: honest accuracy", xlabel="Sybils per honest node (phi)", xscale="log")
        ax[a_i][1].set(title=f"{attack}: attack rate", xlabel="phi", xscale="log")
        ax[a_i][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def exp_variance(out: Path, quick: bool, argv: str) -> None:
    """Gossip learning with independent initialisations, with and without variance correction, vs FL."""
    base = SimConfig(protocol="gossip", nodes=8 if quick else 30, rounds=None, duration=5.0 if quick else 60.0,
                     gossip_interval=1.0, init="independent", mnist1d_samples=4000, target=0.3 if quick else 0.5,
                     eval_samples=300 if quick else 1000, eval_nodes=10, eval_every=1.0 if quick else 2.0,
                     **PUBLISHED)
    runs = [run(replace(base, correct="none"), "gossip, independent init, no correction"),
            # the rule at every merge (what this row always ran; the default vc: `vcmatrix`)
            run(replace(base, correct="vc-always"), "gossip, independent init, variance correction"),
            run(replace(base, init="same", correct="none"), "gossip, same init"),
            run(replace(base, protocol="fl", init="same"), "fl (FedAvg)")]
    plot_runs(runs, out / "variance.png", "Vanishing variance: gossip with independent initialisation")
    md = [f"| run | time to {base.target} (virtual s) | acc at 10 s | final acc |", "|---|---|---|---|"]
    for r in runs:
        s = r["summary"]
        at10 = next((p["acc_mean"] for p in r["series"] if p["t"] >= min(10.0, base.duration)), None)
        md.append(f"| {r['label']} | {fmt(s['time_to_target_s'], 1)} | {fmt(at10)} | {fmt(s['final_acc_mean'])} |")
    save(out, "variance", runs, md, argv)


def exp_vcregular(out: Path, quick: bool, argv: str) -> None:
    """Variance correction as its paper tested it (issue 10 item 8): every node trains and then
    averages with its neighbours on a random 8-regular graph (D-PSGD's neighbourhood averaging),
    50 nodes, independent initialisations, run to convergence; against FL (10 clients/round)."""
    base = SimConfig(protocol="dpsgd", topology="regular:8", nodes=10 if quick else 50, rounds=None,
                     duration=8.0 if quick else float(OPTS.get("duration") or 400.0), init="independent",
                     lr=0.01, momentum=0.9, target=0.3 if quick else 0.8, eval_samples=300 if quick else 1000,
                     eval_nodes=10, eval_every=2.0 if quick else 10.0, mnist1d_samples=4000 if quick else 0,
                     seed=int(OPTS.get("seed") or 0), filter="none")
    runs = [run(replace(base, correct="none"), "regular:8, independent init, no correction"),
            run(replace(base, correct="vc"), "regular:8, independent init, vc (default)"),
            run(replace(base, correct="vc-always"), "regular:8, independent init, vc-always"),
            run(replace(base, init="same", correct="none"), "regular:8, same init, no correction"),
            run(replace(base, protocol="fl", init="same", correct="none"), "fl (FedAvg, 10 clients/round)")]
    plot_runs(runs, out / "vcregular.png", "Neighbourhood averaging on a random 8-regular graph, 50 nodes")
    md = [f"| run | time to {base.target} (virtual s) | acc at 50 s | best acc | final acc | corrected merges |",
          "|---|---|---|---|---|---|"]
    for r in runs:
        s = r["summary"]
        at = next((p["acc_mean"] for p in r["series"] if p["t"] >= min(50.0, base.duration)), None)
        md.append(f"| {r['label']} | {fmt(s['time_to_target_s'], 1)} | {fmt(at)} | {fmt(s['best_acc_mean'])} | "
                  f"{fmt(s['final_acc_mean'])} | {s['vc_corrected']} |")
    save(out, "vcregular", runs, md, argv)


def exp_scale(out: Path, quick: bool, argv: str) -> None:
    """1,000-node MoDeST: 100 rounds; wall-clock minutes per 100 rounds."""
    cfg = SimConfig(nodes=100 if quick else 1000, rounds=3 if quick else 100, eval_samples=500,
                    mnist1d_samples=4000 if quick else 0, **PUBLISHED)
    runs = [run(cfg, f"modest x{cfg.nodes}"),
            run(replace(cfg, local_epochs=5 if not quick else 1), f"modest x{cfg.nodes}, 5 local epochs")]
    plot_runs(runs, out / "scale.png", f"MoDeST with {cfg.nodes} nodes", x="round")
    md = [("| run | rounds | wall s | minutes per 100 rounds | final acc | MB total | MB per node (mean / max) | "
          "view records per model message |"), "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        s = r["summary"]
        per100 = s["wall_s"] / 60 * 100 / max(1, s["rounds_completed"])
        md.append(f"| {r['label']} | {s['rounds_completed']} | {s['wall_s']} | {per100:.2f} | "
                  f"{fmt(s['final_acc_mean'])} | {mb(s['bytes_total'])} | {mb(s['bytes_per_honest_node_mean'])} / "
                  f"{mb(s['bytes_per_honest_node_max'])} | {cfg.nodes} |")
    save(out, "scale", runs, md, argv)


# ---- variance correction: the default pipeline never hurts (issue 10, item 1) -----------------------
OPTS: dict[str, Any] = {}   # --seeds / --rounds / --nodes (vcmatrix only)


def _drops(series: list[dict[str, Any]]) -> tuple[float, float]:
    """(largest fall below the best so far, fall below the run's best after first reaching it)."""
    accs = [p["acc_mean"] for p in series if p["acc_mean"] is not None]
    best_so_far, run_drop = -1.0, 0.0
    for a in accs:
        best_so_far = max(best_so_far, a)
        run_drop = max(run_drop, best_so_far - a)
    best = max(accs)
    after = accs[accs.index(best):]
    return run_drop, best - min(after)


def exp_vcmatrix(out: Path, quick: bool, argv: str) -> None:
    """Default pipeline (sybilwall -> mean -> vc) vs --correct none; nodes x partition x protocol x seeds.

    Criteria per run: final accuracy of the default >= --correct none's - 0.01; the default never
    falls more than 0.05 below its own best after reaching it. ``vc-always`` (the old rule) runs for
    the first seed, to show the collapse the matrix guards against. Also: the independent-init rescue.
    """
    seeds = OPTS.get("seeds") or ([0] if quick else [0, 1, 2])
    nodes = OPTS.get("nodes") or ([3] if quick else [3, 10])
    rounds = OPTS.get("rounds") or (4 if quick else 300)
    parts = OPTS.get("parts") or (["iid"] if quick else ["iid", "dirichlet:0.1"])
    protos = OPTS.get("protos") or ["modest", "gossip"]
    cells = [(n, part, proto) for n in nodes for part in parts for proto in protos]
    runs: list[dict[str, Any]] = []

    def cfg_of(n: int, part: str, proto: str, seed: int, correct: str) -> SimConfig:
        return SimConfig(protocol=proto, nodes=n, sample_size=min(n, 10), rounds=rounds, seed=seed,
                         partition=part, mnist1d_samples=4000,
                         eval_samples=300 if quick else (OPTS.get("eval_samples") or 1000),
                         eval_nodes=min(n, 10), correct=correct)

    # independent-init rescue (the `variance` experiment's setup), default vs none vs vc-always
    rescue_base = SimConfig(protocol="gossip", nodes=8 if quick else 30, rounds=None,
                            duration=5.0 if quick else 60.0, gossip_interval=1.0, init="independent",
                            mnist1d_samples=4000, eval_samples=300 if quick else 1000, eval_nodes=10,
                            eval_every=1.0 if quick else 5.0)
    rescue: list[dict[str, Any]] = []
    for seed in ([] if OPTS.get("no_rescue") else seeds):
        for label, kw in (("independent init, --correct none", {"correct": "none"}),
                          ("independent init, default (vc)", {}),
                          ("independent init, --correct vc-always", {"correct": "vc-always"}),
                          ("same init, --correct none", {"init": "same", "correct": "none"})):
            if OPTS.get("rescue_only") and label not in OPTS["rescue_only"]:
                continue
            r = run(replace(rescue_base, seed=seed, **kw), f"rescue seed {seed}: {label}")
            r["group"], r["variant"] = "rescue", label
            rescue.append(r)
    always = OPTS.get("always_seed", seeds[0])
    for seed in ([] if OPTS.get("rescue_only") else seeds):
        for n, part, proto in cells:
            variants = [("default", SimConfig.correct), ("none", "none")]
            if seed == always:
                variants.append(("vc-always", "vc-always"))
            if OPTS.get("variants"):
                variants = [v for v in variants if v[0] in OPTS["variants"]]
            for variant, correct in variants:
                r = run(cfg_of(n, part, proto, seed, correct), f"{proto} n={n} {part} seed {seed} {variant}")
                r["group"], r["variant"], r["cell"] = "matrix", variant, [n, part, proto, seed]
                runs.append(r)
            (out / "vcmatrix.partial.json").write_text(json.dumps(rescue + runs))
    (out / "vcmatrix.partial.json").write_text(json.dumps(rescue + runs))
    vcmatrix_report(out, rescue + runs, argv)


def vcmatrix_report(out: Path, all_runs: list[dict[str, Any]], argv: str) -> None:
    """The vcmatrix tables and criteria from its runs (also from several partial runs: --merge).

    Where a cell has no ``none`` run but its default run corrected no tensor (summary
    ``vc_corrected`` 0), the none run is that run: the simulator is deterministic and the default
    then did exactly what ``--correct none`` does (tests/test_sim.py checks the identity).
    """
    rescue = [r for r in all_runs if r["group"] == "rescue"]
    runs = [r for r in all_runs if r["group"] == "matrix"]
    seeds = sorted({r["cell"][3] for r in runs} | {r["config"]["seed"] for r in rescue})
    order = {"modest": 0, "gossip": 1}
    cells = sorted(dict.fromkeys(tuple(r["cell"][:3]) for r in runs), key=lambda c: (c[0], c[1], order.get(c[2], 9)))
    nodes = list(dict.fromkeys(c[0] for c in cells))
    parts = list(dict.fromkeys(c[1] for c in cells))
    rounds = runs[0]["config"]["rounds"] if runs else 0
    by = {(tuple(r["cell"]), r["variant"]): r for r in runs}
    md = [f"Reduced matrix: nodes {', '.join(map(str, nodes))}; {', '.join(parts)}; MoDeST (sample size "
          f"min(n, 10)) and gossip learning; {rounds} rounds; seeds {', '.join(map(str, seeds))}; MNIST-1D "
          "4,000 samples, cnn1d, 500 test samples per evaluation; the default pipeline "
          "(sybilwall -> mean -> vc) against `--correct none`.", "",
          "| nodes | partition | protocol | seed | default final | tensors corrected | none final | "
          "default - none | default drop after best | none drop after best | first rule (vc 0.5) final | "
          "vc-always final (best) | pass |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fails, missing = [], []
    worst_delta, worst_drop, worst_rel = 1.0, 0.0, -1.0
    for seed in seeds:
        for n, part, proto in cells:
            key = (n, part, proto, seed)
            d, o = by.get((key, "default")), by.get((key, "none"))
            if d is None:
                missing.append(f"{proto} n={n} {part} seed {seed}")
                continue
            same = o is None and d["summary"].get("vc_corrected") == 0
            if o is None and not same:
                missing.append(f"{proto} n={n} {part} seed {seed} (none)")
                continue
            o = d if same else o
            fd, fo = d["summary"]["final_acc_mean"], o["summary"]["final_acc_mean"]
            _, dd = _drops(d["series"])
            _, od = _drops(o["series"])
            first, a = by.get((key, "vc-0.5")), by.get((key, "vc-always"))
            always = (f"{fmt(a['summary']['final_acc_mean'])} ({fmt(a['summary']['best_acc_mean'])})"
                      if a else "")
            ok = fd >= fo - 0.01 and dd <= 0.05
            worst_delta, worst_drop = min(worst_delta, fd - fo), max(worst_drop, dd)
            worst_rel = max(worst_rel, dd - od)
            if not ok:
                fails.append(f"{proto} n={n} {part} seed {seed}")
            md.append(f"| {n} | {part} | {proto} | {seed} | {fmt(fd)} | {d['summary'].get('vc_corrected', '?')} | "
                      f"{fmt(fo)}{' (= default)' if same else ''} | {fd - fo:+.3f} | {dd:.3f} | {od:.3f} | "
                      f"{fmt(first['summary']['final_acc_mean']) if first else ''} | {always} | "
                      f"{'yes' if ok else '**no**'} |")
    crit1 = f"final accuracy vs `--correct none` >= -0.01 everywhere: worst {worst_delta:+.3f}"
    crit2 = f"never more than 0.05 below its own best after reaching it: worst {worst_drop:.3f}"
    md += ["", f"- Criterion 1 ({'holds' if worst_delta >= -0.01 else 'FAILS'}): {crit1}",
           f"- Criterion 2 ({'holds' if worst_drop <= 0.05 else 'FAILS'}): {crit2}",
           f"- Criterion 2 against `--correct none` ({'holds' if worst_rel <= 0.05 else 'FAILS'}): the default's "
           f"drop after its best minus none's, worst {worst_rel:+.3f}",
           f"- Failing runs: {', '.join(fails) if fails else 'none'}",
           f"- Not run: {', '.join(missing) if missing else 'none'}", ""]
    if rescue:
        base = rescue[0]["config"]
        md += ["Independent-initialisation rescue (gossip learning, "
               f"{base['nodes']} nodes, push every 1 s, {base['duration']:.0f} virtual s), final mean accuracy:", "",
               "| run | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
               "|---|" + "---|" * (len(seeds) + 1)]
        for label in dict.fromkeys(r["variant"] for r in rescue):
            got = {r["config"]["seed"]: r["summary"]["final_acc_mean"] for r in rescue if r["variant"] == label}
            accs = list(got.values())
            md.append(f"| {label} | " + " | ".join(fmt(got.get(s)) for s in seeds) +
                      f" | {fmt(sum(accs) / len(accs))} |")
    print("\n".join(md), flush=True)
    _plot_vcmatrix(runs, cells, seeds[0], out / "vcmatrix.png")
    save(out, "vcmatrix", rescue + runs, md, argv)


def _plot_vcmatrix(runs: list[dict[str, Any]], cells: list, seed: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not cells:   # rescue runs only: nothing to plot
        return
    cols = min(4, len(cells))
    rows = (len(cells) + cols - 1) // cols
    fig, ax = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for c_i, cell in enumerate(cells):
        a = ax[c_i // cols][c_i % cols]
        for r in runs:
            if r["cell"] == [*cell, seed]:
                a.plot([p["round"] for p in r["series"]], [p["acc_mean"] for p in r["series"]], label=r["variant"])
        a.set(title=f"{cell[2]} n={cell[0]} {cell[1]} (seed {seed})", xlabel="round", ylim=(0, 1))
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


EXPERIMENTS = {"compare": exp_compare, "churn": exp_churn, "sybil": exp_sybil, "variance": exp_variance,
               "scale": exp_scale, "vcmatrix": exp_vcmatrix, "vcregular": exp_vcregular}
TITLES = {
    "compare": "1. MoDeST vs FL vs D-PSGD vs gossip learning (100 nodes)",
    "churn": "2. Churn: 80 % of 100 nodes crash (sf = 0.8), and joins",
    "sybil": "3. Sybil attacks: label flip and backdoor",
    "variance": "4. Variance correction: gossip learning with independent initialisation",
    "scale": "5. Scale: 1,000-node MoDeST",
    "vcmatrix": "6. The default pipeline never hurts: variance correction only where models are uncorrelated",
    "compress": "7. Compressed updates with error feedback (`--compress`)",   # benchmarks/compress.py
    # measured with benchmarks/partition.py (real processes) and the simulator's partition churn
    "partition": "8. Partitions: each part keeps its pace, the parts heal and merge",
}


def report(out: Path) -> None:
    lines = ["# Simulation results", "",
             "Generated from `docs/results/*.md` by `scripts/experiments.py report`; the notes under each",
             "table (agreement with the papers) are in `docs/results/notes-*.md`.", "",
             "Sections 1-5 ran before the simulator took the daemon's defaults (`sybilwall -> mean -> vc`):",
             "they use no filter and no correction, and their commands say so (`--filter none --correct none`;",
             "the variance section's corrected row is the old every-merge rule, now `--correct vc-always`).",
             "Section 6 runs the defaults.", ""]
    for name, title in TITLES.items():
        frag = out / f"{name}.md"
        lines += [f"## {title}", ""]
        lines += [frag.read_text() if frag.exists() else "_not run yet_", ""]
        if frag.exists() and (out / f"{name}.png").exists():
            lines += [f"![{name}](results/{name}.png)", ""]
        notes = out / f"notes-{name}.md"
        if notes.exists():
            lines += [notes.read_text(), ""]
    # sections after the generated ones (9 on: benchmarks' measurements) are written by hand: kept
    path = out.parent / "RESULTS.md"
    old = path.read_text() if path.exists() else ""
    cut = old.find(f"\n## {len(TITLES) + 1}. ")
    path.write_text("\n".join(lines) + (old[cut:] if cut >= 0 else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=[*EXPERIMENTS, "all", "report"])
    p.add_argument("--quick", action="store_true", help="tiny version (seconds), for the test suite")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--seeds", default="", help="vcmatrix: comma-separated seeds (default 0,1,2)")
    p.add_argument("--seed", type=int, default=0, help="vcregular: the seed")
    p.add_argument("--duration", type=float, default=0.0, help="vcregular: virtual seconds (default 400)")
    p.add_argument("--rounds", type=int, default=0, help="vcmatrix: rounds per run (default 300)")
    p.add_argument("--nodes", default="", help="vcmatrix: comma-separated network sizes (default 3,10)")
    p.add_argument("--always-seed", type=int, default=None, help="vcmatrix: seed that also runs vc-always")
    p.add_argument("--parts", default="", help="vcmatrix: partitions (default iid,dirichlet:0.1)")
    p.add_argument("--protos", default="", help="vcmatrix: protocols (default modest,gossip)")
    p.add_argument("--rescue-only", default="", help="vcmatrix: only these rescue runs (labels, ';'-separated)")
    p.add_argument("--variants", default="", help="vcmatrix: only these of default,none,vc-always")
    p.add_argument("--no-rescue", action="store_true", help="vcmatrix: skip the independent-init rescue runs")
    p.add_argument("--eval-samples", type=int, default=0, help="vcmatrix: test samples per evaluation (1000)")
    p.add_argument("--merge", default="", help="vcmatrix: only build the report from these DIRs' "
                   "vcmatrix.partial.json (comma-separated; runs split over processes)")
    args = p.parse_args(argv)
    OPTS.clear()
    OPTS.update({"seeds": [int(x) for x in args.seeds.split(",") if x], "rounds": args.rounds,
                 "nodes": [int(x) for x in args.nodes.split(",") if x]})
    OPTS["no_rescue"] = args.no_rescue
    OPTS["variants"] = [x for x in args.variants.split(",") if x]
    OPTS["rescue_only"] = [x for x in args.rescue_only.split(";") if x]
    OPTS["parts"] = [x for x in args.parts.split(",") if x]
    OPTS["protos"] = [x for x in args.protos.split(",") if x]
    OPTS["eval_samples"] = args.eval_samples
    OPTS["seed"], OPTS["duration"] = args.seed, args.duration
    if args.always_seed is not None:
        OPTS["always_seed"] = args.always_seed
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shown = "scripts/experiments.py " + " ".join(argv if argv is not None else sys.argv[1:])
    names = list(EXPERIMENTS) if args.experiment == "all" else (
        [] if args.experiment == "report" else [args.experiment])
    if args.merge:
        merged = []
        for d in args.merge.split(","):  # "old:DIR": its default runs used the first rule (vc 0.5)
            old = d.startswith("old:")
            for r in json.loads((Path(d.removeprefix("old:")) / "vcmatrix.partial.json").read_text()):
                if old and r["variant"] in ("default", "independent init, default (vc)"):
                    r["variant"] = "vc-0.5" if r["group"] == "matrix" else "independent init, first rule (vc 0.5)"
                merged.append(r)
        vcmatrix_report(out, merged, shown)
        names = []
    for name in names:
        print(f"== {name}", flush=True)
        EXPERIMENTS[name](out, args.quick, shown)
    if not args.quick and args.experiment in ("report", "all"):
        report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
