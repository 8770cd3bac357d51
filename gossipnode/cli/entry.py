"""Command line: gossipnode start | status | identity | export | cluster | data split | sim.

Kept light: this module imports no torch, numpy or asyncio; each command imports what it needs
when it runs (`gossipnode --version` and `gossipnode status` never load torch)."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from gossipnode import __version__

from gossipnode.runtime.flags import NODE_FLAGS


class Parser(argparse.ArgumentParser):
    """A usage error is one line (the flag and what is wrong), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _field_names() -> set[str]:
    return {name for _, name, _, _ in NODE_FLAGS}


def _defaults() -> dict[str, Any]:
    from dataclasses import fields

    from gossipnode.runtime.config import NodeConfig
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
    from gossipnode.cli.start import cmd_start
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
    st.set_defaults(func=_lazy(".status", "cmd_status"))

    ident = sub.add_parser("identity", help="print the node id of a state dir's key (creates it if missing)")
    ident.add_argument("--state-dir", default="", help="default: GOSSIPNODE_STATE_DIR or ./gossipnode-state")
    ident.add_argument("--public-key", action="store_true", help="also print the public key (hex)")
    ident.set_defaults(func=_lazy(".tools", "cmd_identity"))

    ex = sub.add_parser("export", help="write a state dir's checkpointed model as .safetensors or .pt")
    ex.add_argument("--state-dir", required=True, help="a node's state dir (holds checkpoint.json)")
    ex.add_argument("--out", required=True, help="FILE.safetensors, or FILE.pt (torch.load(FILE, weights_only=True))")
    ex.add_argument("--format", choices=("safetensors", "pt"), help="default: from the --out suffix")
    ex.set_defaults(func=_lazy(".tools", "cmd_export"))

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
    sp.set_defaults(func=_lazy(".tools", "cmd_data_split"))

    help_sim = "simulate many nodes on a virtual clock (README, \"The simulator\")"
    if sim:
        from gossipnode.sim.cli import add_sim_arguments
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
