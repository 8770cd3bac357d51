"""Wall time of CLI commands that must be quick (issue 13): `gossipnode --version`, `gossipnode
status URL` (against a stub serving a canned /v1/status), and `gossipnode start` on a port
already in use. N runs each; prints min / median / max seconds.

    python benchmarks/cli_latency.py [N]
"""
from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATUS = {"node_id": "0123456789abcdef", "address": "http://127.0.0.1:8470", "network_id": "gossipnode",
          "round": 12, "role": "idle", "peers_known": 7, "peers_active": 7, "rounds_trained": 5,
          "rounds_aggregated": 2, "last_eval": {"round": 12, "accuracy": 0.93, "loss": 0.2},
          "model_hash": "ab" * 32, "bytes_sent": 123456, "bytes_received": 654321, "messages_rejected": {},
          "device": "cpu", "uptime_s": 42.0, "version": "0.1.0", "protocol": "modest",
          "pipeline": {"filter": "sybilwall", "combine": "mean", "correct": "vc"}}


class Stub(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = json.dumps(STATUS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a) -> None:
        pass


def timed(args: list[str], n: int, expect: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "gossipnode", *args], capture_output=True, cwd=tempfile.gettempdir())
        out.append(time.perf_counter() - t0)
        assert p.returncode == expect, p.stderr
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    with tempfile.TemporaryDirectory() as d:
        rows = {
            "python -c pass (interpreter alone)": None,
            "gossipnode --version": timed(["--version"], n, 0),
            "gossipnode status URL": timed(["status", f"http://127.0.0.1:{srv.server_port}"], n, 0),
            "gossipnode status URL --json": timed(["status", f"http://127.0.0.1:{srv.server_port}", "--json"], n, 0),
            "gossipnode start (port in use)": timed(["start", "--port", str(busy.getsockname()[1]),
                                                      "--state-dir", f"{d}/st"], n, 2),
        }
    base = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"])
        base.append(time.perf_counter() - t0)
    rows["python -c pass (interpreter alone)"] = base
    print(f"{'command':36} {'min':>6} {'median':>7} {'max':>6}  (s, {n} runs)")
    for k, v in rows.items():
        print(f"{k:36} {min(v):6.3f} {statistics.median(v):7.3f} {max(v):6.3f}")


if __name__ == "__main__":
    main()
