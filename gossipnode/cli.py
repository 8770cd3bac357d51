"""Command line: gossipnode start | status | identity | export | cluster | data split | sim.

Kept light: this module imports no torch, numpy or asyncio; each command imports what it needs
when it runs (`gossipnode --version` and `gossipnode status` never load torch)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from . import __version__

# (flag, config field, type, help). Every flag can also come from a TOML file or GOSSIPNODE_<FIELD>.
NODE_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--host", "host", str, "address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)"),
    ("--port", "port", int, "REST and peer-message port (default 8470)"),
    ("--advertise", "advertise", str, "URL peers use to reach this node (default http://HOST:PORT)"),
    ("--peers", "peers", str, "bootstrap peers, comma-separated URLs"),
    ("--state-dir", "state_dir", str, "identity key and checkpoints (default ./gossipnode-state)"),
    ("--network-id", "network_id", str, "nodes only talk to nodes of the same network id"),
    ("--transport", "transport", str, "http, mqtt or http,mqtt"),
    ("--broker", "broker", str, "MQTT broker URL mqtt://HOST:1883 or mqtts://HOST:8883 (needed by --transport mqtt)"),
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
    ("--correct", "correct", str, "aggregation correction: vc (default: variance correction where the merged "
     "models are uncorrelated), vc-always (at every merge), none"),
    ("--krum-f", "krum_f", int, "krum/multikrum: assumed Byzantine contributions f"),
    ("--multikrum-m", "multikrum_m", int, "multikrum: contributions kept m"),
    ("--trim-beta", "trim_beta", float, "trimmed-mean: fraction trimmed at each side"),
    ("--vc-eps", "vc_eps", float, "variance correction epsilon"),
    ("--vc-rho", "vc_rho", float, "variance correction damping (1 = full correction)"),
    ("--vc-max-corr", "vc_max_corr", float, "vc: correct fully below half this correlation of the merged "
     "models, not at all above it"),
    ("--history-records", "history_records", int, "SybilWall history records piggy-backed per model message"),
    ("--history-dtype", "history_dtype", str, "f2 (float16, default) or f4: histories on the wire"),
    ("--compress", "compress", str,
     "compress this node's updates: none (float32, default), f16, int8 (per-block scale) or "
     "topk:FRACTION (e.g. topk:0.02); what is dropped is added to the next update (error feedback)"),
    ("--max-update-norm", "max_update_norm", float,
     "reject a received model with ||model - reference|| / ||reference|| above this "
     "(reference: a delta's base, else the current model; default 100; 0: off)"),
    ("--adopt-margin", "adopt_margin", float,
     "MoDeST: refuse another node's round model whose mean loss on this node's data exceeds that of "
     "the best of its current and last 8 accepted models by more than this many nats (default 0.5; 0: off)"),
    ("--protocol", "protocol", str, "modest (default) or gossip (gossip learning)"),
    ("--gossip-interval", "gossip_interval", float, "gossip: seconds between pushes"),
    ("--beta", "beta", float, "gossip: weight of the own model when merging"),
    ("--independent-init", "independent_init", bool, "start from a random model of this node's own"),
    ("--attack", "attack", str, "label-flip (or labelflip) or backdoor: run Sybil attacker identities "
     "(for evaluation)"),
    ("--eval-attack", "eval_attack", str, "label-flip, backdoor or both (comma-separated): report these "
     "attacks' rates in evaluations (set it when the network has an attacker; none reported otherwise)"),
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
    ("--log-level", "log_level", str, "debug, info, warning or error"),
    ("--log-format", "log_format", str, "text or json (one JSON object per line)"),
]


class Parser(argparse.ArgumentParser):
    """A usage error is one line (the flag and what is wrong), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _field_names() -> set[str]:
    return {name for _, name, _, _ in NODE_FLAGS}


def _defaults() -> dict[str, Any]:
    from dataclasses import fields

    from .config import NodeConfig
    return {f.name: getattr(NodeConfig(), f.name) for f in fields(NodeConfig) if f.name != "extra"}


def _add_node_flags(p: argparse.ArgumentParser, skip: set[str] = frozenset(), defaults: bool = False) -> None:
    """Flags default to None (unset: the file, the environment or the built-in default decides);
    with `defaults` their help says the built-in default."""
    shown = _defaults() if defaults else {}
    for flag, name, typ, help_ in NODE_FLAGS:
        if name in skip:
            continue
        if name in shown and "default" not in help_:
            d = shown[name]
            d = ",".join(d) if isinstance(d, tuple) else d
            help_ = f"{help_} (default: {d if d != '' else 'none'})"
        if typ is bool:
            p.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=help_)
        else:
            p.add_argument(flag, dest=name, type=typ, default=None, metavar=name.upper(), help=help_)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = _field_names()
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def fetch_status(url: str, timeout: float = 5.0, token: str | None = None, cafile: str = "") -> dict[str, Any]:
    """GET URL/v1/status; `token` (default: GOSSIPNODE_API_TOKEN) as a bearer token, `cafile`
    a CA (or self-signed certificate) to trust for https:// besides the system's."""
    import json
    import os
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


def _start(a: argparse.Namespace) -> int:
    from .commands.start import cmd_start
    return cmd_start(a, _overrides(a))


def _lazy(module: str, func: str):
    def run(a: argparse.Namespace) -> int:
        from importlib import import_module
        return getattr(import_module(module, __package__), func)(a)
    return run


def build_parser(sim: bool = True) -> argparse.ArgumentParser:
    """`sim`: add the simulator's own flags (they import it, and so torch)."""
    p = Parser(prog="gossipnode", description="Peer-to-peer decentralized learning node.")
    p.add_argument("--version", action="version", version=f"gossipnode {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("start", help="run one node", formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="gossipnode start [--config FILE] [--check] [--FLAG VALUE ...]",
                       description="Run one node. Every flag can also be set in a TOML file (--config; "
                       "keys as flag names,\noptionally under [node]) or as GOSSIPNODE_<FLAG> in the "
                       "environment.\nPrecedence: flags > environment > file > defaults.")
    s.add_argument("--config", help="TOML file with node settings (see examples/node.toml)")
    s.add_argument("--check", action="store_true",
                   help="check the settings, state dir, port, data, model and device, then exit")
    _add_node_flags(s, defaults=True)
    s.set_defaults(func=_start)

    st = sub.add_parser("status", help="show a node's status")
    st.add_argument("url", nargs="?", help="node URL (default http://127.0.0.1:8470)")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.add_argument("--api-token", default=None, help="bearer token of a node started with --api-token "
                    "(default: GOSSIPNODE_API_TOKEN)")
    st.add_argument("--cacert", default="", help="for https://: trust this CA or self-signed certificate")
    st.set_defaults(func=_lazy(".commands.status", "cmd_status"))

    ident = sub.add_parser("identity", help="print the node id of a state dir's key (creates it if missing)")
    ident.add_argument("--state-dir", default="", help="default: GOSSIPNODE_STATE_DIR or ./gossipnode-state")
    ident.add_argument("--public-key", action="store_true", help="also print the public key (hex)")
    ident.set_defaults(func=_lazy(".commands.tools", "cmd_identity"))

    ex = sub.add_parser("export", help="write a state dir's checkpointed model as .safetensors or .pt")
    ex.add_argument("--state-dir", required=True, help="a node's state dir (holds checkpoint.json)")
    ex.add_argument("--out", required=True, help="FILE.safetensors, or FILE.pt (torch.load(FILE, weights_only=True))")
    ex.add_argument("--format", choices=("safetensors", "pt"), help="default: from the --out suffix")
    ex.set_defaults(func=_lazy(".commands.tools", "cmd_export"))

    c = sub.add_parser("cluster", help="run N local nodes with a live view, then print the results")
    c.add_argument("--nodes", type=int, default=8)
    c.add_argument("--base-port", type=int, default=8470)
    c.add_argument("--dir", default="", help="state dirs go here (default: a temp dir)")
    c.add_argument("--timeout", type=float, default=0, help="stop everything after this many seconds")
    c.add_argument("--json-out", default="", help="write the final statuses as JSON here")
    _add_node_flags(c, skip={"port", "peers", "state_dir", "shard", "advertise"})
    c.set_defaults(func=_lazy(".cluster", "main"))

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
    sp.set_defaults(func=_lazy(".commands.tools", "cmd_data_split"))

    help_sim = "simulate many nodes on a virtual clock (README, \"The simulator\")"
    if sim:
        from .sim.cli import add_sim_arguments
        add_sim_arguments(sub.add_parser("sim", help=help_sim))
    else:
        sub.add_parser("sim", help=help_sim, add_help=False)
    return p


def _command(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(sim=_command(argv) == "sim").parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
