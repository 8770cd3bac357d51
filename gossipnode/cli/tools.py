"""`gossipnode identity`, `gossipnode data split` and `gossipnode export`."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def cmd_identity(args: Any) -> int:
    """Print the node id of the key in a state dir (creating it if missing): the broker user
    name for deploy/mosquitto-acl.conf."""
    from gossipnode.runtime.config import NodeConfig
    from gossipnode.wire.identity import Identity
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


def cmd_data_split(args: Any) -> int:
    from gossipnode.learn import data as ldata
    try:
        if args.from_file:
            ds = ldata.load_npz(args.from_file)
        else:
            if args.dataset != "mnist1d":
                print("gossipnode: --dataset must be mnist1d (or use --from FILE.npz)", file=sys.stderr)
                return 2
            ds = ldata.load_mnist1d(**({"num_samples": args.mnist1d_samples} if args.mnist1d_samples else {}))
        paths = ldata.save_shards(ds, args.nodes, args.partition, args.seed, args.out)
    except (ValueError, OSError) as e:
        print(f"gossipnode: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0


def cmd_export(args: Any) -> int:
    """The state dir's checkpointed model as .safetensors (no torch needed) or .pt (a plain
    dict of tensors: `torch.load(path, weights_only=True)`)."""
    from gossipnode.runtime import checkpoint
    from gossipnode.cli.export import write
    out = Path(args.out)
    fmt = args.format or {".safetensors": "safetensors", ".pt": "pt", ".pth": "pt"}.get(out.suffix)
    if fmt is None:
        print(f"gossipnode: --out {args.out}: name it .safetensors or .pt (or pass --format)", file=sys.stderr)
        return 2
    if not Path(args.state_dir).is_dir():
        print(f"gossipnode: --state-dir {args.state_dir}: no such directory", file=sys.stderr)
        return 2
    loaded = checkpoint.load(args.state_dir)
    if loaded is None:
        print(f"gossipnode: --state-dir {args.state_dir}: no usable checkpoint there", file=sys.stderr)
        return 2
    model, meta = loaded
    info = {k: str(meta[k]) for k in ("round", "model", "node_id", "network_id") if k in meta}
    try:
        write(out, model, info, fmt)
    except OSError as e:
        print(f"gossipnode: --out {args.out}: cannot write it ({e.strerror or e})", file=sys.stderr)
        return 1
    print(f"{out}: {len(model)} tensors of round {meta.get('round', '?')} (model {str(meta.get('model', ''))[:16]})")
    return 0
