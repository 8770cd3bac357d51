"""`gossipnode cluster`: N local node processes, a live view, a final table."""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from gossipnode.api import jsonout
from gossipnode.cli.entry import fetch_status
from gossipnode.runtime.flags import NODE_FLAGS

GRACE_S = 20.0  # after the first node finished its last round, give the others this long
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def node_command(i: int, n: int, base_port: int, state_root: Path, forwarded: list[str]) -> list[str]:
    urls = [f"http://127.0.0.1:{base_port + j}" for j in range(n)]
    return [sys.executable, "-m", "gossipnode", "start", "--port", str(base_port + i),
            "--peers", ",".join(u for j, u in enumerate(urls) if j != i),
            "--shard", f"{i}/{n}", "--state-dir", str(state_root / f"node-{i}"), *forwarded]


def forwarded_flags(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for flag, name, typ, _ in NODE_FLAGS:
        v = getattr(args, name, None)
        if v is True and typ is bool:
            out.append(flag)
        elif v is not None:
            out += [flag, str(v)]
    return out


def _attacks(statuses: list[dict[str, Any] | None]) -> list[str]:
    """Attacks whose rates the nodes report: only those configured (--eval-attack); none otherwise."""
    return sorted({a for s in statuses if s for a in ((s.get("last_eval") or {}).get("attack_rate") or {})})


def _table(statuses: list[dict[str, Any] | None], title: str, final: bool = False) -> Table:
    t = Table(title=title)
    attacks = _attacks(statuses)
    for col in ("node", "round", "role", "peers", "trained", "aggr.", "eval@", "accuracy",
                "loss", *(f"{a} rate" for a in attacks), "MB out", "rej."):
        t.add_column(col, justify="right" if col not in ("node", "role") else "left")
    accs = []
    for i, s in enumerate(statuses):
        if s is None:
            t.add_row(str(i), *["-"] * (10 + len(attacks)))
            continue
        ev = s.get("last_eval") or {}
        if ev.get("accuracy") is not None:
            accs.append(ev["accuracy"])
        role = "finished" if s.get("finished") else s["role"]
        t.add_row(str(i), str(s["round"]), role, f"{s['peers_active']}/{s['peers_known']}",
                  str(s["rounds_trained"]), str(s["rounds_aggregated"]), str(ev.get("round", "-")),
                  f"{ev['accuracy']:.4f}" if "accuracy" in ev else "-",
                  f"{ev['loss']:.4f}" if "loss" in ev else "-",
                  *(f"{ev['attack_rate'][a]:.4f}" if a in (ev.get("attack_rate") or {}) else "-" for a in attacks),
                  f"{s['bytes_sent'] / 1e6:.2f}", str(sum(s["messages_rejected"].values())))
    if accs:
        t.caption = f"mean accuracy {sum(accs) / len(accs):.4f}  min {min(accs):.4f}  max {max(accs):.4f}" + (
            "" if final else "   (Ctrl-C stops all nodes)")
    return t


def main(args: argparse.Namespace) -> int:
    n = args.nodes
    from gossipnode.cli.entry import _overrides
    from gossipnode.runtime.config import load_config
    try:  # the nodes' settings, checked once here: one line and exit 2, as `start` does
        if n < 1:
            raise ValueError(f"--nodes must be >= 1, got {n}")
        if not 1 <= args.base_port <= 65536 - n:
            raise ValueError(f"--nodes {n} from --base-port {args.base_port}: ports must be 1-65535")
        load_config(None, overrides=_overrides(args) | {"port": args.base_port, "shard": f"0/{n}"})
    except ValueError as e:
        print(f"gossipnode: {e}", file=sys.stderr)
        return 2
    root = Path(args.dir or tempfile.mkdtemp(prefix="gossipnode-cluster-"))
    root.mkdir(parents=True, exist_ok=True)
    fwd = forwarded_flags(args)
    console = Console() if sys.stdout.isatty() else Console(width=110)
    console.print(f"[bold]gossipnode cluster[/]: {n} nodes on ports {args.base_port}..{args.base_port + n - 1}, "
                  f"state and logs in {root}")
    # The nodes run in their own sessions (a terminal's Ctrl-C must not kill them mid-write), so
    # this process forwards the stop. Handlers are set explicitly: a shell starts background jobs
    # with SIGINT ignored, and a plain `kill` (SIGTERM) must not leave the nodes running either.
    # A flag, not an exception, so a signal that lands mid-start or mid-poll leaves nothing half done.
    stop_signal: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: stop_signal.append(signum))
    procs: list[subprocess.Popen] = []
    logs = []
    for i in range(n):
        log = open(root / f"node-{i}.log", "ab")
        logs.append(log)
        procs.append(subprocess.Popen(node_command(i, n, args.base_port, root, fwd), stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    statuses: list[dict[str, Any] | None] = [None] * n
    urls = [f"http://127.0.0.1:{args.base_port + i}" for i in range(n)]
    pool = ThreadPoolExecutor(max_workers=min(n, 16))
    t0 = time.monotonic()
    first_done: float | None = None

    def poll() -> None:
        def one(i: int) -> dict[str, Any] | None:
            if procs[i].poll() is not None:
                return _final_status(root, i) or statuses[i]
            try:
                return fetch_status(urls[i], timeout=2.0, token=getattr(args, "api_token", None))
            except (OSError, ValueError):
                return statuses[i]
        for i, s in enumerate(pool.map(one, range(n))):
            statuses[i] = s

    last_round = -1

    def progress(elapsed: float, running: int) -> None:
        # Without a terminal (CI, pipes), one line per new round instead of a live table.
        nonlocal last_round
        live_s = [s for s in statuses if s]
        r = max((s["round"] for s in live_s), default=0)
        if r == last_round:
            return
        last_round = r
        accs = [s["last_eval"]["accuracy"] for s in live_s if s.get("last_eval")]
        mean = f"{sum(accs) / len(accs):.4f}" if accs else "-"
        console.print(f"t={elapsed:5.0f}s round {r:3d}: mean accuracy {mean} ({running}/{n} running)")

    with Live(_table(statuses, "starting..."), console=console, refresh_per_second=2,
              transient=True) if console.is_terminal else _Null() as live:
        while not stop_signal:
            poll()
            running = sum(p.poll() is None for p in procs)
            elapsed = time.monotonic() - t0
            if console.is_terminal:
                live.update(_table(statuses, f"t = {elapsed:.0f} s, {running}/{n} nodes running"))
            else:
                progress(elapsed, running)
            if running == 0:
                break
            if running < n and first_done is None:
                first_done = time.monotonic()
            if first_done is not None and time.monotonic() - first_done > GRACE_S:
                break  # the others never heard of the last round: stop them
            if args.timeout and elapsed > args.timeout:
                console.print(f"[yellow]timeout after {args.timeout:.0f} s[/]")
                break
            for _ in range(10):
                if stop_signal:
                    break
                time.sleep(0.1)
    stopped_by = stop_signal[0] if stop_signal else None
    if stopped_by is not None:
        console.print(f"[yellow]interrupted ({signal.Signals(stopped_by).name}): stopping all nodes[/]")
    for sig in STOP_SIGNALS:  # a second Ctrl-C must not abandon the nodes halfway; _stop_all is bounded
        signal.signal(sig, signal.SIG_IGN)
    _stop_all(procs)
    for i in range(n):
        statuses[i] = _final_status(root, i) or statuses[i]
    for log in logs:
        log.close()
    pool.shutdown()
    console.print(_table(statuses, f"final: {n} nodes, {time.monotonic() - t0:.0f} s", final=True))
    if args.json_out:
        Path(args.json_out).write_text(jsonout.dumps(statuses, indent=2))
    failed = [i for i, p in enumerate(procs) if p.returncode not in (0, -signal.SIGTERM)]
    if failed and stopped_by is None:
        console.print(f"[red]nodes {failed} exited with errors; see {root}/node-N.log[/]")
        return 1
    return 0 if stopped_by is None else 128 + stopped_by


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _final_status(root: Path, i: int) -> dict[str, Any] | None:
    p = root / f"node-{i}" / "status.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _stop_all(procs: list[subprocess.Popen], timeout: float = 20.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
