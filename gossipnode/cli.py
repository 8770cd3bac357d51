"""Command line: gossipnode start | status | cluster | data split."""
from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
from dataclasses import fields
from typing import Any

from . import __version__, jsonout
from .config import NodeConfig, load_config

# (flag, config field, type, help). Every flag can also come from a TOML file or GOSSIPNODE_<FIELD>.
NODE_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--host", "host", str, "address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)"),
    ("--port", "port", int, "REST and peer-message port (default 8470)"),
    ("--advertise", "advertise", str, "URL peers use to reach this node (default http://HOST:PORT)"),
    ("--peers", "peers", str, "bootstrap peers, comma-separated URLs"),
    ("--state-dir", "state_dir", str, "identity key and checkpoints (default ./gossipnode-state)"),
    ("--network-id", "network_id", str, "nodes only talk to nodes of the same network id"),
    ("--transport", "transport", str, "http, mqtt or http,mqtt"),
    ("--broker", "broker", str, "MQTT broker URL mqtt://HOST:1883 or mqtts://HOST:8883"),
    ("--mqtt-username", "mqtt_username", str, "MQTT user name (or GOSSIPNODE_MQTT_USERNAME)"),
    ("--mqtt-password", "mqtt_password", str, "MQTT password (better: GOSSIPNODE_MQTT_PASSWORD)"),
    ("--mqtt-ca", "mqtt_ca", str, "CA certificate file for mqtts://"),
    ("--mqtt-password-file", "mqtt_password_file", str, "read the MQTT password from this file"),
    ("--api-token", "api_token", str,
     "require this bearer token for /v1/status, /v1/peers, /v1/rounds, /v1/models/*, /metrics "
     "(better: GOSSIPNODE_API_TOKEN or --api-token-file; /v1/health and peer messages stay open)"),
    ("--api-token-file", "api_token_file", str, "read the API token from this file"),
    ("--tls-cert", "tls_cert", str, "serve the REST/HTTP port over TLS with this PEM certificate (chain)"),
    ("--tls-key", "tls_key", str, "the PEM private key of --tls-cert"),
    ("--dataset", "dataset", str, "built-in data set: mnist1d"),
    ("--shard", "shard", str, "this node's shard I/N of the built-in data set"),
    ("--partition", "partition", str, "iid or dirichlet:ALPHA"),
    ("--data", "data", str, "your own .npz (arrays x, y, optional x_test, y_test)"),
    ("--seed", "seed", int, "seed of the data split and the initial model"),
    ("--mnist1d-samples", "mnist1d_samples", int, "MNIST-1D size (0: default)"),
    ("--model", "model", str, "cnn1d, mlp, logreg, gnlenet or package.module:factory"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N or mps"),
    ("--local-epochs", "local_epochs", int, "local epochs per round"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--lr", "lr", float, "SGD learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--threads", "threads", int, "torch CPU threads"),
    ("--filter", "filter", str, "aggregation filter: sybilwall (default), foolsgold, krum, multikrum, none"),
    ("--combine", "combine", str, "aggregation combiner: mean (default), median, trimmed-mean"),
    ("--correct", "correct", str, "aggregation correction: vc (default, variance-corrected), none"),
    ("--krum-f", "krum_f", int, "krum/multikrum: assumed Byzantine contributions f"),
    ("--multikrum-m", "multikrum_m", int, "multikrum: contributions kept m"),
    ("--trim-beta", "trim_beta", float, "trimmed-mean: fraction trimmed at each side"),
    ("--vc-eps", "vc_eps", float, "variance correction epsilon"),
    ("--vc-rho", "vc_rho", float, "variance correction damping (1 = full correction)"),
    ("--history-records", "history_records", int, "SybilWall history records piggy-backed per model message"),
    ("--history-dtype", "history_dtype", str, "f2 (float16, default) or f4: histories on the wire"),
    ("--max-update-norm", "max_update_norm", float,
     "reject a received model with ||model - reference|| / ||reference|| above this "
     "(reference: a delta's base, else the current model; default 100; 0: off)"),
    ("--protocol", "protocol", str, "modest (default) or gossip (gossip learning)"),
    ("--gossip-interval", "gossip_interval", float, "gossip: seconds between pushes"),
    ("--beta", "beta", float, "gossip: weight of the own model when merging"),
    ("--independent-init", "independent_init", bool, "start from a random model of this node's own"),
    ("--attack", "attack", str, "labelflip or backdoor: run Sybil attacker identities (for evaluation)"),
    ("--sybils", "sybils", int, "with --attack: number of Sybil identities in this process"),
    ("--sample-size", "sample_size", int, "MoDeST: trainers per round (s)"),
    ("--aggregators", "aggregators", int, "MoDeST: aggregators per round (a)"),
    ("--success-fraction", "success_fraction", float, "MoDeST: aggregate after s*sf updates"),
    ("--ping-timeout", "ping_timeout", float, "MoDeST: seconds before an unanswered candidate is skipped"),
    ("--inactivity-threshold", "inactivity_threshold", int, "MoDeST: tau, silent rounds before a peer is left out"),
    ("--aggregation-timeout", "aggregation_timeout", float, "aggregate what arrived after this many seconds"),
    ("--round-timeout", "round_timeout", float, "re-send after this many seconds without progress"),
    ("--stall-timeout", "stall_timeout", float,
     "idle without a new round this long: check the network, restart a round if nobody holds one "
     "(0: 3 x round timeout; < 0: off)"),
    ("--role-slack", "role_slack", int,
     "MoDeST role checks: a model's sender may be this many places behind the s (a) reachable "
     "candidates of the receiver's sample order and still count as sampled (default 2)"),
    ("--accept-quorum", "accept_quorum", int,
     "MoDeST: a trainer adopts a round's model only once this many aggregators sent the same hash "
     "(1..--aggregators; default 1)"),
    ("--bootstrap-wait", "bootstrap_wait", float, "seconds to wait for peers before round 1"),
    ("--bootstrap-timeout", "bootstrap_timeout", float, "start round 1 after this even if peers are silent"),
    ("--rounds", "rounds", int, "leave gracefully after this many rounds (0: run until stopped)"),
    ("--round-window", "round_window", int,
     "hearsay (records, pings, views) moves the round estimate at most this far above verified rounds (0: tau)"),
    ("--max-peers", "max_peers", int, "view cap: unknown peers beyond it are not added"),
    ("--max-pending", "max_pending", int, "joiners probed at once; more are dropped"),
    ("--join-rate", "join_rate", float, "JOIN adverts of non-members accepted per second per source IP"),
    ("--join-pow", "join_pow", int,
     "proof-of-work bits a joiner's key must carry (this node solves its own once, cached; 0: off)"),
    ("--max-message-mb", "max_message_mb", float, "largest accepted message"),
    ("--inbound-budget-mb", "inbound_budget_mb", float,
     "HTTP bodies being received/processed at once, in MiB (0: --max-message-mb); over it: 503"),
    ("--http-timeout", "http_timeout", float,
     "seconds: idle keep-alive and header time-out; a body may take this plus its size / min rate"),
    ("--http-min-rate-mb", "http_min_rate_mb", float, "MiB/s: slowest request body accepted"),
    ("--log-level", "log_level", str, "debug, info, warning"),
]
FIELD_NAMES = {f.name for f in fields(NodeConfig)}


def _add_node_flags(p: argparse.ArgumentParser, skip: set[str] = frozenset()) -> None:
    for flag, name, typ, help_ in NODE_FLAGS:
        if name in skip:
            continue
        if typ is bool:
            p.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=help_)
        else:
            p.add_argument(flag, dest=name, type=typ, default=None, help=help_)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in FIELD_NAMES and v is not None}


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _run(coro) -> Any:
    try:
        import uvloop
        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# ---- start -----------------------------------------------------------------------------------
def cmd_start(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config, overrides=_overrides(args))
    except (ValueError, OSError) as e:
        print(f"gossipnode: bad configuration: {e}", file=sys.stderr)
        return 2
    _setup_logging(cfg.log_level)
    # A native crash prints a traceback into the log; `kill -USR1 PID` dumps every thread's stack.
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    rc = _run(_serve(cfg))
    # A worker thread still busy (a training step that has not reached its cancel check, a
    # hung write) would hold the interpreter's exit: everything is saved or reported by now.
    import threading
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


# SIGTERM/SIGINT: the node leaves within STOP_TIMEOUT_S; if anything still holds the process
# (a hung disk, a worker thread) it is ended HARD_EXIT_S after the signal with exit code 1.
STOP_TIMEOUT_S = 3.5
HARD_EXIT_S = 4.5


def _hard_exit_after(seconds: float, signame: str) -> None:
    """Ends the process `seconds` from now if it is still there: a Python timer that says why,
    and faulthandler's C watchdog 0.3 s later for when no Python thread can run (a C extension
    holding the GIL); that one exits with code 1 silently (its traceback dump goes nowhere)."""
    import threading

    def fire() -> None:
        sys.stderr.write(f"gossipnode: did not stop within {seconds:.1f} s of {signame}; exiting now\n")
        sys.stderr.flush()
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()
    global _devnull
    _devnull = _devnull or open(os.devnull, "w")  # noqa: SIM115  (kept open until the exit)
    faulthandler.dump_traceback_later(seconds + 0.3, exit=True, file=_devnull)


_devnull = None


async def _serve(cfg: NodeConfig) -> int:
    if cfg.attack:
        from .attack import SybilHost
        node = SybilHost(cfg)
    else:
        from .node import Node
        node = Node(cfg)
    loop = asyncio.get_running_loop()

    def on_signal(s: signal.Signals) -> None:
        _hard_exit_after(HARD_EXIT_S, s.name)
        asyncio.ensure_future(node.stop(graceful=True, reason=s.name, timeout=STOP_TIMEOUT_S))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await node.start()
    except OSError as e:
        print(f"gossipnode: cannot listen on {cfg.host}:{cfg.port}: {e}", file=sys.stderr)
        await node.stop(graceful=False, timeout=STOP_TIMEOUT_S)
        return 1
    await node.wait_stopped()
    errors = [n.stop_error for n in getattr(node, "nodes", [node]) if getattr(n, "stop_error", None)]
    if errors:
        print(f"gossipnode: stopped uncleanly: {errors[0]}", file=sys.stderr)
        return 1
    return 0


# ---- status ----------------------------------------------------------------------------------
def fetch_status(url: str, timeout: float = 5.0, token: str | None = None, cafile: str = "") -> dict[str, Any]:
    """GET URL/v1/status; `token` (default: GOSSIPNODE_API_TOKEN) as a bearer token, `cafile`
    a CA (or self-signed certificate) to trust for https:// besides the system's."""
    import urllib.request
    token = os.environ.get("GOSSIPNODE_API_TOKEN", "") if token is None else token
    req = urllib.request.Request(url.rstrip("/") + "/v1/status",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = None
    if cafile:
        import ssl
        ctx = ssl.create_default_context(cafile=cafile)
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return json.loads(r.read())


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url or f"http://127.0.0.1:{os.environ.get('GOSSIPNODE_PORT', '8470')}"
    import urllib.error
    try:
        s = fetch_status(url, token=args.api_token, cafile=args.cacert)
    except urllib.error.HTTPError as e:
        if e.code == 401:
            print(f"gossipnode: {url} needs an API token: pass --api-token or set GOSSIPNODE_API_TOKEN"
                  + (" (the one given was not accepted)" if (args.api_token or os.environ.get(
                      "GOSSIPNODE_API_TOKEN")) else ""), file=sys.stderr)
        else:
            print(f"gossipnode: {url} answered HTTP {e.code}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"gossipnode: no node answers at {url}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(jsonout.dumps(s, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"gossipnode {s['node_id']} at {s['address']}", show_header=False)
    t.add_column("field", style="bold")
    t.add_column("value")
    ev = s.get("last_eval") or {}
    rows = [
        ("network", s["network_id"]), ("round", s["round"]), ("role", s["role"]),
        ("peers known / active", f"{s['peers_known']} / {s['peers_active']}"),
        ("rounds trained / aggregated", f"{s['rounds_trained']} / {s['rounds_aggregated']}"),
        ("last eval", f"round {ev.get('round')}: accuracy {ev.get('accuracy')}, loss {ev.get('loss')}"
         if ev else "none yet"),
        ("model", s["model_hash"][:16]),
        ("bytes sent / received", f"{s['bytes_sent']:,} / {s['bytes_received']:,}"),
        ("rejected", ", ".join(f"{k}={v}" for k, v in s["messages_rejected"].items()) or "none"),
        ("device", s["device"]), ("uptime", f"{s['uptime_s']:.0f} s"), ("version", s["version"]),
    ]
    for extra in ("pipeline", "protocol"):
        if extra in s:
            rows.append((extra, json.dumps(s[extra]) if isinstance(s[extra], dict) else str(s[extra])))
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)
    return 0


# ---- identity --------------------------------------------------------------------------------
def cmd_identity(args: argparse.Namespace) -> int:
    """Print the node id of the key in a state dir (creating it if missing): the broker user
    name for deploy/mosquitto-acl.conf."""
    from pathlib import Path

    from .wire.identity import Identity
    state_dir = args.state_dir or os.environ.get("GOSSIPNODE_STATE_DIR") or NodeConfig().state_dir
    try:
        ident = Identity.load_or_create(Path(state_dir) / "identity.key")
    except (OSError, ValueError) as e:
        print(f"gossipnode: cannot read or create the identity in {state_dir}: {e}", file=sys.stderr)
        return 1
    print(ident.node_id)
    if args.public_key:
        print(ident.public_key.hex())
    return 0


# ---- data split ------------------------------------------------------------------------------
def cmd_data_split(args: argparse.Namespace) -> int:
    from .learn import data as ldata
    try:
        if args.from_file:
            ds = ldata.load_npz(args.from_file)
        else:
            if args.dataset != "mnist1d":
                print("gossipnode: built-in data set is mnist1d (or use --from FILE.npz)", file=sys.stderr)
                return 2
            ds = ldata.load_mnist1d(**({"num_samples": args.mnist1d_samples} if args.mnist1d_samples else {}))
        paths = ldata.save_shards(ds, args.nodes, args.partition, args.seed, args.out)
    except (ValueError, OSError) as e:
        print(f"gossipnode: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gossipnode", description="Peer-to-peer decentralized learning node.")
    p.add_argument("--version", action="version", version=f"gossipnode {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("start", help="run one node")
    s.add_argument("--config", help="TOML file with node settings (keys as flag names)")
    _add_node_flags(s)
    s.set_defaults(func=cmd_start)

    st = sub.add_parser("status", help="show a node's status")
    st.add_argument("url", nargs="?", help="node URL (default http://127.0.0.1:8470)")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.add_argument("--api-token", default=None, help="bearer token of a node started with --api-token "
                    "(default: GOSSIPNODE_API_TOKEN)")
    st.add_argument("--cacert", default="", help="for https://: trust this CA or self-signed certificate")
    st.set_defaults(func=cmd_status)

    ident = sub.add_parser("identity", help="print the node id of a state dir's key (creates it if missing)")
    ident.add_argument("--state-dir", default="", help="default: GOSSIPNODE_STATE_DIR or ./gossipnode-state")
    ident.add_argument("--public-key", action="store_true", help="also print the public key (hex)")
    ident.set_defaults(func=cmd_identity)

    c = sub.add_parser("cluster", help="run N local nodes with a live view, then print the results")
    c.add_argument("--nodes", type=int, default=8)
    c.add_argument("--base-port", type=int, default=8470)
    c.add_argument("--dir", default="", help="state dirs go here (default: a temp dir)")
    c.add_argument("--timeout", type=float, default=0, help="stop everything after this many seconds")
    c.add_argument("--json-out", default="", help="write the final statuses as JSON here")
    _add_node_flags(c, skip={"port", "peers", "state_dir", "shard", "advertise"})
    c.set_defaults(func=lambda a: __import__("gossipnode.cluster", fromlist=["main"]).main(a))

    d = sub.add_parser("data", help="data set tools")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    sp = dsub.add_parser("split", help="write one .npz shard per node")
    sp.add_argument("--dataset", default="mnist1d")
    sp.add_argument("--from", dest="from_file", default="", help="split this .npz instead")
    sp.add_argument("--nodes", type=int, required=True)
    sp.add_argument("--partition", default="iid")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--mnist1d-samples", type=int, default=0)
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_data_split)

    from .sim.cli import add_sim_arguments
    add_sim_arguments(sub.add_parser("sim", help="simulate many nodes on a virtual clock (README, \"The simulator\")"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
