"""`gossipnode status [URL]`: a node's /v1/status as a table or JSON (no torch, no asyncio)."""
from __future__ import annotations

import json
import os
import sys
from typing import Any


def _stage(d: Any) -> str:
    """{"name": "sybilwall", "histories": 3} -> "sybilwall (histories 3)"."""
    if not isinstance(d, dict):
        return json.dumps(d)
    rest = ", ".join(f"{k} {v}" for k, v in d.items() if k != "name")
    return f"{d.get('name', '?')} ({rest})" if rest else str(d.get("name", "?"))


def cmd_status(args: Any) -> int:
    from gossipnode.api import jsonout
    from gossipnode.cli.entry import fetch_status
    import urllib.error
    url = args.url or f"http://127.0.0.1:{os.environ.get('GOSSIPNODE_PORT', '8470')}"
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
    except (OSError, ValueError) as e:
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
    if isinstance(s.get("pipeline"), dict):
        rows.append(("pipeline", " -> ".join(_stage(v) for v in s["pipeline"].values())))
    if "protocol" in s:
        rows.append(("protocol", str(s["protocol"])))
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)
    return 0
