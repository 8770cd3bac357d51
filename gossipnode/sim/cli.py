"""``gossipnode sim``: arguments, progress bar, JSON result and optional plots."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from .config import PROTOCOLS, SimConfig

# flag -> help; the type and default come from SimConfig. Flags the daemon has too take the
# daemon's help text (gossipnode/cli.py NODE_FLAGS) unless listed here: same name, same meaning.
_HELP: dict[str, str] = {
    "protocol": f"one of {', '.join(PROTOCOLS)}",
    "nodes": "honest nodes at the start",
    "rounds": "stop after this many rounds (modest/fl: aggregated rounds; dpsgd: rounds all nodes "
              "finished; gossip: gossip intervals)",
    "duration": "stop after this much virtual time (s)",
    "seed": "one seed for everything: a run is reproducible bit for bit",
    "dataset": "mnist1d or a .npz file with x, y, x_test, y_test (e.g. CIFAR-10 as N x 3 x 32 x 32)",
    "mnist1d_samples": "MNIST-1D size (0: 10,000)",
    "partition": "iid or dirichlet:ALPHA",
    "model": "cnn1d, mlp, logreg, gnlenet or package.module:factory",
    "init": "same (one seeded initial model) or independent (one per node)",
    "topology": "dpsgd: exp (one-peer exponential), ring, regular:K or rgg:RADIUS:MAX_DEGREE "
                "(the SybilWall paper: rgg:0.2:7)",
    "latency": "per-link latency (s): const:X, uniform:A:B, lognormal:MU:SIGMA, normal:MU:SD or N x N .npy",
    "bandwidth": "per-node bandwidth in bytes/s (same syntax, or a length-N .npy)",
    "compute": "per-node training speed in samples/s (same syntax): heterogeneous nodes",
    "agg_time": "virtual seconds per aggregated contribution",
    "stall_timeout": "modest: the daemon's stall restart (< 0: off, as in the paper; 0: 3 x round timeout)",
    "role_slack": "modest: role-check tolerance, places behind the sample (the daemon's --role-slack)",
    "accept_quorum": "modest: adopt a model once this many aggregators sent its hash (--accept-quorum)",
    "sybil_aggregate": "modest: honest; replace (a Sybil sampled to aggregate sends the attacker's "
                       "model instead of the aggregate: what --accept-quorum and --adopt-margin defend "
                       "against); drop (it ignores the round's updates and sends the current model)",
    "churn": "crash|leave|join:COUNT:EVERY:START:TIMES or partition:SIZES:START:DURATION (e.g. "
             "partition:3/3:120:240), comma-separated (paper: crash:5:60:300:16)",
    "attack": "none, label-flip (or labelflip) or backdoor: the scenario's Sybils run this attack",
    "eval_attack": "also measure these attacks' rates without an attack (a no-attack baseline): "
                   "label-flip, backdoor or both, comma-separated",
    "sybils": "Sybil identities per honest node (phi), all sending the attacker's one model",
    "eval_every": "evaluate every this many virtual seconds (0: every rounds/25 rounds)",
    "eval_nodes": "honest nodes evaluated (gossip, dpsgd; modest/fl evaluate the round's model)",
    "eval_samples": "test samples used for evaluation (0: all)",
    "target": "report time and bytes to reach this mean accuracy",
    "history_scope": "sybilwall: node (each node's own history store, as deployed) or global (an "
                     "upper bound no deployment has: every aggregator reads and extends one store)",
}


def _help(name: str) -> str:
    if name in _HELP:
        return _HELP[name]
    from gossipnode.runtime.flags import NODE_FLAGS
    return next((h for _, n, _, h in NODE_FLAGS if n == name), name.replace("_", " "))


def _bool(v: str) -> bool:
    """true/false (yes/no, on/off, 1/0): a bare bool("false") would be True."""
    t = v.strip().lower()
    if t in ("true", "yes", "on", "1"):
        return True
    if t in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {v!r}")


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    for f in fields(SimConfig):
        if f.name == "extra":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        typ: Any = {"int": int, "float": float, "str": str, "bool": _bool}.get(str(f.type).split(" ")[0], str)
        if f.name == "rounds":
            typ, default = int, None   # None: 50 unless --duration is given
        elif f.name == "duration":
            typ = float
        p.add_argument(flag, dest=f.name, type=typ, default=default,
                       help=f"{_help(f.name)} (default {default})")
    p.add_argument("--independent-init", dest="init", action="store_const", const="independent",
                   help="as for gossipnode start: every node starts from its own random model (= --init independent)")
    p.add_argument("--json-out", default="", help="write the JSON result here (default: stdout)")
    p.add_argument("--plot", default="", help="write PNG plots of accuracy and bytes here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sim)


def config_from_args(args: argparse.Namespace) -> SimConfig:
    kw = {f.name: getattr(args, f.name) for f in fields(SimConfig) if f.name != "extra"}
    if kw["rounds"] is None and kw["duration"] is None:
        kw["rounds"] = SimConfig.rounds
    return SimConfig(**kw)


def plot(result: dict[str, Any], path: str | Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["series"]
    t = [r["t"] for r in s]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot(t, [r["acc_mean"] for r in s], label="mean")
    ax[0].plot(t, [r["acc_min"] for r in s], label="min", alpha=0.6)
    if any(r.get("attack_rate") is not None for r in s):
        ax[0].plot(t, [r["attack_rate"] for r in s], label="attack rate", ls="--")
    ax[0].set(xlabel="virtual time (s)", ylabel="honest test accuracy", ylim=(0, 1))
    ax[0].legend()
    ax[1].plot(t, [r["bytes_total"] / 1e6 for r in s])
    ax[1].set(xlabel="virtual time (s)", ylabel="MB sent (total)")
    ax[2].plot(t, [r["active_nodes"] for r in s], label="alive honest nodes")
    ax[2].plot(t, [r["round"] for r in s], label="rounds completed")
    ax[2].set(xlabel="virtual time (s)")
    ax[2].legend()
    fig.suptitle(title or f"gossipnode sim: {result['summary']['protocol']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def cmd_sim(args: argparse.Namespace) -> int:
    from .run import run_sim
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        print(f"gossipnode sim: {e}", file=sys.stderr)
        return 2
    if args.quiet:
        result = run_sim(cfg)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%  {task.fields[info]}"), TimeElapsedColumn(),
                      transient=False, console=_stderr_console()) as prog:
            task = prog.add_task(f"sim {cfg.protocol} x{cfg.nodes}", total=1.0, info="")

            def progress(frac: float, info: dict[str, Any]) -> None:
                prog.update(task, completed=frac, info=f"t={info['t']:.0f}s round={info['round']}")

            result = run_sim(cfg, progress)
    text = json.dumps(result, indent=1, default=_json_default)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(text)
        print(json.dumps(result["summary"], indent=1, default=_json_default))
    else:
        print(text)
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot(result, args.plot)
    return 0


def _stderr_console():
    from rich.console import Console
    return Console(stderr=True)
