"""Shared test helpers: free ports, node processes, in-process node clusters."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def get_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def statuses(nodes) -> list[dict[str, Any] | None]:
    """Each node's /v1/status, None where it does not answer."""
    out = []
    for n in nodes:
        try:
            out.append(n.status())
        except OSError:
            out.append(None)
    return out


def wait_for(pred, timeout: float, what: str, nodes) -> float:
    """Poll `pred` until true (returns the seconds it took) or fail with the nodes' log tails."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.5)
    logs = "\n\n".join(n.log()[-2000:] for n in nodes)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")


class NodeProcess:
    """A real `python -m gossipnode start` process on a loopback port."""

    def __init__(self, port: int, state_dir: Path, args: list[str], log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.state_dir = state_dir
        self.args = args
        self.log_path = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gossipnode", "start", "--port", str(self.port),
             "--state-dir", str(self.state_dir), *self.args],
            stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        return self

    def status(self) -> dict[str, Any]:
        return get_json(self.url + "/v1/status")

    def wait_up(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited early:\n{self.log()}")
            try:
                return self.status()
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"node did not come up in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("node did not stop on SIGTERM") from None


@pytest.fixture
def node_procs(tmp_path):
    """Factory: start node processes; all are killed at the end of the test."""
    procs: list[NodeProcess] = []

    def make(n: int, args: list[str], peers: bool = True, shard: bool = True) -> list[NodeProcess]:
        ports = free_ports(n)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        out = []
        for i, p in enumerate(ports):
            a = list(args)
            if peers:
                a += ["--peers", ",".join(u for j, u in enumerate(urls) if j != i)]
            if shard:
                a += ["--shard", f"{i}/{n}"]
            np_ = NodeProcess(p, tmp_path / f"node-{p}", a, tmp_path / f"node-{p}.log")
            out.append(np_.start())
        procs.extend(out)
        return out

    yield make
    for p in procs:
        p.kill()
