"""Shared test helpers: free ports, node processes; the unit / integration / slow markers.

Markers are given by file (LAYERS below, or a `file::test` entry for one test of a mixed file),
not in every file: `pytest -m unit` runs the in-process layer (no processes, no broker; sockets
only where the unit under test is the HTTP transport or node on 127.0.0.1), `-m integration`
the tests that need processes or a broker, `-m slow` the long ones (also marked in place with
@pytest.mark.slow). A file not in LAYERS is unit, and a unit test that starts a process fails.
For in-process networks of real nodes see memnet.py."""
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


# What is not unit, by file or `file::test` (the most specific entry wins). Reasons in comments.
LAYERS: dict[str, tuple[str, ...]] = {
    # command-line processes, real node processes
    "test_cli_errors.py": ("integration",),          # `python -m gossipnode` with bad flags
    "test_cli_stop.py": ("integration", "slow"),
    "test_e2e_cli.py": ("integration",),
    "test_train_process.py": ("integration",),       # the training child process, real node processes
    "test_export.py": ("integration",),              # `gossipnode export` as a process
    "test_python_api.py": ("integration",),          # the README script and `import` as processes
    "test_integration_attack.py": ("integration", "slow"),
    "test_integration_gossip_vc.py": ("integration", "slow"),
    "test_integration_http.py": ("integration", "slow"),
    "test_integration_membership.py": ("integration", "slow"),
    "test_partition_live.py": ("integration", "slow"),
    "test_security_live.py": ("integration", "slow"),
    "test_http_fuzz.py": ("integration",),           # a node process under schemathesis and fuzzing
    "test_state.py::test_sigterm_with_unwritable_checkpoint_exits_fast_nonzero_with_one_line": ("integration", "slow"),
    "test_state.py::test_sigterm_with_a_full_state_dir": ("integration", "slow"),
    "test_node_sanity.py::test_live_node_rejects_nan_and_huge_models": ("integration", "slow"),
    # docker-compose, Chromium, Mosquitto
    "test_deploy.py": ("integration",),
    "test_deploy.py::test_dockerfile_has_cpu_default_and_cuda_switch": ("unit",),
    "test_deploy.py::test_dockerfile_pins_the_torch_of_scripts_setup": ("unit",),
    "test_deploy.py::test_k8s_one_place_sets_nodes_and_shards": ("unit",),
    "test_deploy.py::test_k8s_pods_meet_the_restricted_pod_security_level": ("unit",),
    "test_deploy.py::test_k8s_disruption_budgets_and_network_policies": ("unit",),
    "test_deploy.py::test_deploy_readme_exists": ("unit",),
    "test_dashboard.py": ("integration",),
    "test_dashboard.py::test_dashboard_assets_ship_in_the_package_and_never_parse_markup": ("unit",),
    "test_dashboard.py::test_openapi_documents_every_route_and_its_protection": ("unit",),
    "test_mqtt_cluster.py": ("integration", "slow"),
    "test_mqtt_hardening.py": ("integration",),
    "test_mqtt_restart.py": ("integration",),
    "test_mqtt_restart.py::test_will_counts_only_after_grace_of_connected_time_without_reannounce": ("unit",),
    "test_mqtt_transport.py": ("integration",),
    "test_mqtt_transport.py::test_records_are_validated_strictly": ("unit",),
    "test_mqtt_transport.py::test_chunk_validation_and_bounded_reassembly": ("unit",),
    # in-process but long (seconds on 2 cores, measured): sweeps of seeds and whole simulations
    "test_sim_experiments.py": ("slow",),                                                 # 20 s: every preset
    "test_sim_compress.py": ("slow",),                       # 12 s: whole simulations per compressor
    "test_http_resources.py": ("integration",),   # a real HTTP server's limits; waits out its time-outs (10 s)
    "test_sim.py::test_partition_churn_cuts_and_heals_and_the_parts_merge": ("slow",),   # 12 s
    "test_core_modest.py::test_rounds_continue_whenever_the_crash_happens": ("slow",),   # 6 s: 40 seeds
    "test_core_modest.py::test_stall_check_restarts_nothing_in_a_healthy_network": ("slow",),  # 5 s
}
LAYER_MARKS = ("unit", "integration", "slow")


def _layers(item: pytest.Item) -> tuple[str, ...]:
    name = item.path.name
    func = getattr(item, "originalname", item.name)
    own = {m.name for m in item.iter_markers() if m.name in LAYER_MARKS}
    got = LAYERS.get(f"{name}::{func}", LAYERS.get(name, ("unit",)))
    if own & {"slow", "integration"}:   # marked in place: never unit
        got = tuple(m for m in got if m != "unit") or ("integration",)
    return tuple(m for m in got if m not in own)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for m in _layers(item):
            item.add_marker(m)


@pytest.fixture(autouse=True)
def _unit_starts_no_process(request, monkeypatch):
    """A unit test that starts a process is in the wrong layer: it fails and says so."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return

    class NoProcess(subprocess.Popen):
        def __init__(self, args, *rest, **kw) -> None:
            raise AssertionError(f"{request.node.nodeid} is marked unit but starts a process ({args!r}): "
                                 "list it in LAYERS in tests/conftest.py")

        def __del__(self) -> None:
            pass

        def __repr__(self) -> str:
            return "NoProcess()"

    monkeypatch.setattr(subprocess, "Popen", NoProcess)
    yield


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


async def until(pred, timeout: float, what: str, every: float = 0.02) -> float:
    """Await `pred()` on the event loop (checked every `every` s): the seconds it took, or an
    AssertionError naming `what`. For in-process tests, instead of a fixed sleep."""
    import asyncio
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not pred():
        if loop.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)
    return loop.time() - t0


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
