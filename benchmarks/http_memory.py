"""Memory of a node receiving big HTTP bodies at once (issue 9: "8 concurrent 200 MB bodies keep
RSS under 2x the idle figure").

Starts a real node process on 127.0.0.1, waits until it is idle, reads its RSS from /proc, then
POSTs N signed MODEL frames of SIZE MB each (one float32 tensor, from fresh keys; they decode
and are then rejected `incompatible_model`, the most expensive path for a body that is not a
usable model) all at once, each sender retrying on 503 after Retry-After as a node does. RSS is
sampled every 10 ms while they are in flight. Prints idle vs peak RSS and the ratio.

    python benchmarks/http_memory.py [--n 8] [--size-mb 200] [--node-arg=--inbound-budget-mb=512]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gossipnode.core.messages import ModelKind, ModelMsg  # noqa: E402
from gossipnode.wire.codec import encode  # noqa: E402
from gossipnode.wire.identity import Identity  # noqa: E402
from gossipnode.wire.tensors import model_hash, to_raw  # noqa: E402


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def free_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def send(session: aiohttp.ClientSession, url: str, frame: bytes, deadline: float) -> tuple[int, int, str]:
    """POST until answered with anything but 503 (waiting Retry-After); (status, tries, body)."""
    tries = 0
    while True:
        tries += 1
        async with session.post(url, data=frame, expect100=True,
                                headers={"Content-Type": "application/x-gossipnode"}) as r:
            body = (await r.text())[:80]
            if r.status != 503 or time.monotonic() > deadline:
                return r.status, tries, body
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))


async def run(url: str, frames: list[bytes], timeout: float) -> list[tuple[int, int, str]]:
    deadline = time.monotonic() + timeout
    t = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=t, connector=aiohttp.TCPConnector(limit=0)) as s:
        return await asyncio.gather(*(send(s, url, f, deadline) for f in frames))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="concurrent bodies")
    ap.add_argument("--size-mb", type=float, default=200.0, help="MB (10^6 bytes) per body")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before measuring")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--node-arg", action="append", default=[],
                    help="extra node flag, e.g. --node-arg=--inbound-budget-mb=512")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    n_floats = int(a.size_mb * 1e6) // 4
    print(f"building {a.n} frames of {n_floats * 4 / 1e6:.0f} MB ...", file=sys.stderr)
    tensors = (to_raw("w", np.zeros(n_floats, dtype="<f4")),)
    h = model_hash(tensors)
    msg = ModelMsg(1, ModelKind.AGGREGATED, h, (), None, tensors)
    frames = [encode(Identity.generate(), "bench", 1, time.time(), msg) for _ in range(a.n)]
    del tensors, msg

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "node.log", "wb")
        args = [sys.executable, "-m", "gossipnode", "start", "--port", str(port), "--state-dir", f"{tmp}/s",
                "--network-id", "bench", "--bootstrap-wait", "600", "--bootstrap-timeout", "600",
                "--mnist1d-samples", "2000", "--log-level", "warning", *a.node_arg]
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env=os.environ | {"PYTHONPATH": str(ROOT)})
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    urllib.request.urlopen(base + "/v1/status", timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None:
                        raise SystemExit((Path(tmp) / "node.log").read_text()) from None
                    time.sleep(0.1)
            time.sleep(a.settle)
            idle = rss_kb(proc.pid)
            peak = [idle]
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    try:
                        peak[0] = max(peak[0], rss_kb(proc.pid))
                    except (OSError, RuntimeError):
                        return
                    time.sleep(0.01)

            th = threading.Thread(target=sample, daemon=True)
            th.start()
            t0 = time.monotonic()
            results = asyncio.run(run(base + "/v1/messages", frames, a.timeout))
            elapsed = time.monotonic() - t0
            time.sleep(0.5)
            stop.set()
            th.join()
            after = rss_kb(proc.pid)
            status = json.loads(urllib.request.urlopen(base + "/v1/status", timeout=5).read())
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    out = {"bodies": a.n, "body_mb": round(len(frames[0]) / 1e6, 1), "idle_rss_mb": round(idle / 1024, 1),
           "peak_rss_mb": round(peak[0] / 1024, 1), "after_rss_mb": round(after / 1024, 1),
           "ratio": round(peak[0] / idle, 2), "seconds": round(elapsed, 1),
           "answers": sorted({(s, b) for s, _, b in results}), "tries": [t for _, t, _ in results],
           "http": status.get("http"), "rejected": status.get("messages_rejected")}
    if a.json:
        print(json.dumps(out))
        return
    print(f"{a.n} concurrent bodies of {out['body_mb']} MB: idle RSS {out['idle_rss_mb']} MB, "
          f"peak {out['peak_rss_mb']} MB, ratio {out['ratio']} (after: {out['after_rss_mb']} MB), "
          f"{out['seconds']} s")
    print(f"answers: {out['answers']}; tries per body: {out['tries']}")
    print(f"node: http {out['http']}, rejected {out['rejected']}")


if __name__ == "__main__":
    main()
