"""`gossipnode start`: check everything cheap first (one line + exit 2 on a bad input), bind the
port, then load data, model and torch, then run the node until it leaves or a signal stops it."""
from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from gossipnode.cli import logs
from gossipnode.cli.preflight import StartError, bind, check_files, check_heavy, check_state_dir

log = logging.getLogger("gossipnode.cli")

# SIGTERM/SIGINT: the node leaves within STOP_TIMEOUT_S; if anything still holds the process
# (a hung disk, a worker thread) it is ended HARD_EXIT_S after the signal with exit code 1.
STOP_TIMEOUT_S = 2.0
HARD_EXIT_S = 2.8


def fail(msg: object) -> int:
    print(f"gossipnode: {msg}", file=sys.stderr)
    return 2


def cmd_start(args: Any, overrides: dict[str, Any]) -> int:
    from gossipnode.runtime.config import load_config
    try:
        cfg = load_config(args.config, overrides=overrides)
    except ValueError as e:
        return fail(e)
    try:
        check_files(cfg)
        check_state_dir(cfg.state_dir)
        sock = bind(cfg.host, cfg.port)
    except StartError as e:
        return fail(e)
    try:
        summary = check_heavy(cfg)
    except StartError as e:
        sock.close()
        return fail(e)
    if args.check:
        sock.close()
        peers = f"peers over {cfg.transport}" + (f" (advertised {cfg.address})" if "http" in cfg.transport else "")
        print(f"gossipnode: configuration OK: REST on {cfg.host}:{cfg.port}, {peers}, "
              f"state dir {cfg.state_dir}; {summary}")
        return 0
    logs.setup(cfg.log_level, cfg.log_format)
    # A native crash prints a traceback into the log; `kill -USR1 PID` dumps every thread's stack.
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    rc = _run(_serve(cfg, sock))
    # Everything is saved and reported by now. Skip the interpreter's teardown (about 1 s of
    # finalising torch on a loaded machine) and any worker thread still busy (a training step
    # that has not reached its cancel check, a hung write) that would hold the exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def _run(coro) -> Any:
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


_devnull = None


def _hard_exit_after(seconds: float, signame: str) -> None:
    """Ends the process `seconds` from now if it is still there: a Python timer that says why,
    and faulthandler's C watchdog 0.3 s later for when no Python thread can run (a C extension
    holding the GIL); that one exits with code 1 silently (its traceback dump goes nowhere)."""
    def fire() -> None:
        sys.stderr.write(f"gossipnode: did not stop within {seconds:.1f} s of {signame}; exiting now\n")
        sys.stderr.flush()
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    global _devnull
    _devnull = _devnull or open(os.devnull, "w")  # noqa: SIM115  (kept open until the exit)
    faulthandler.dump_traceback_later(seconds + 0.15, exit=True, file=_devnull)


async def _serve(cfg, sock) -> int:
    try:
        if cfg.attack:
            from gossipnode.runtime.attacker import SybilHost
            node = SybilHost(cfg)
            node.sock = sock
        else:
            from gossipnode.runtime.node import Node
            node = Node(cfg, sock=sock)
    except (OSError, ValueError) as e:   # what the pre-flight checks could not foresee
        sock.close()
        print(f"gossipnode: cannot create the node: {e}", file=sys.stderr)
        return 2
    loop = asyncio.get_running_loop()
    signalled: list[float] = []

    def on_signal(s: signal.Signals) -> None:
        if signalled:
            return
        signalled.append(time.monotonic())
        _hard_exit_after(HARD_EXIT_S, s.name)
        asyncio.ensure_future(node.stop(graceful=True, reason=s.name, timeout=STOP_TIMEOUT_S))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    learner = getattr(node, "learner", None)   # torch's first-step imports, before REST serves
    if learner is not None and hasattr(learner, "warm_up"):
        secs = await loop.run_in_executor(learner.executor, learner.warm_up)
        log.debug("torch warmed up in %.2f s", secs)
    try:
        await node.start()
    except OSError as e:
        print(f"gossipnode: cannot start: {e}", file=sys.stderr)
        await node.stop(graceful=False, timeout=STOP_TIMEOUT_S)
        return 1
    await node.wait_stopped()
    errors = [n.stop_error for n in getattr(node, "nodes", [node]) if getattr(n, "stop_error", None)]
    if errors:
        print(f"gossipnode: stopped uncleanly: {errors[0]}", file=sys.stderr)
        return 1
    if signalled:
        log.info("stopped %.2f s after the signal; exit 0", time.monotonic() - signalled[0])
    return 0
