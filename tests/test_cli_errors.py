"""Every bad input to `gossipnode start` gets one line naming the flag (or key), exit status 2,
no traceback, and (for what a configuration or file check can tell) before torch loads."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, free_ports

# Runs the CLI and records whether torch was imported (in a file named by $TORCH_FLAG).
WRAP = """import os, sys
from gossipnode.cli.entry import main
try:
    rc = main(sys.argv[1:])
finally:
    with open(os.environ["TORCH_FLAG"], "w") as f:
        f.write("torch" if "torch" in sys.modules else "")
sys.exit(rc)
"""


def run_cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
    flag = tmp_path / "torch-flag"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-c", WRAP, *args], capture_output=True, text=True, timeout=timeout,
                       cwd=tmp_path, env=os.environ | {"TORCH_FLAG": str(flag)} | (env or {}))
    return p, time.monotonic() - t0, flag.read_text() == "torch"


def one_line(p: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    np.savez(tmp_path / "noy.npz", x=np.zeros((5, 3), "f4"))
    np.savez(tmp_path / "len.npz", x=np.zeros((5, 3), "f4"), y=np.zeros(4, "i8"))
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    (tmp_path / "afile").write_text("")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "identity.key").write_bytes(b"12345")
    (tmp_path / "type.toml").write_text('[node]\nport = "eighty"\n')
    (tmp_path / "ture.toml").write_text('independent-init = "ture"\n')
    (tmp_path / "unknown.toml").write_text('sample-sise = 3\n')
    return tmp_path


# (arguments, what the one line must contain). None of these loads torch.
FAST_CASES = {
    "data-missing": (["--data", "nosuch.npz"], ["--data", "no such file"]),
    "data-without-y": (["--data", "noy.npz"], ["--data", "'y'"]),
    "data-lengths": (["--data", "len.npz"], ["--data", "5 samples", "4"]),
    "data-not-npz": (["--data", "text.npz"], ["--data", "not an .npz"]),
    "model-unknown": (["--model", "resnet9000"], ["--model", "cnn1d", "package.module:factory"]),
    "device-tpu": (["--device", "tpu"], ["--device", "cuda:N"]),
    "transport": (["--transport", "carrier-pigeon"], ["--transport", "http", "mqtt"]),
    "filter": (["--filter", "krumm"], ["--filter", "sybilwall", "krum"]),
    "partition": (["--partition", "dirichlet:abc"], ["--partition", "dirichlet:ALPHA"]),
    "state-dir-file": (["--state-dir", "afile"], ["--state-dir", "not a directory"]),
    "state-dir-under-file": (["--state-dir", "afile/state"], ["--state-dir", "not a directory"]),
    "state-dir-corrupt-key": (["--state-dir", "bad"], ["--state-dir", "identity.key"]),
    "peers-not-url": (["--peers", "not a url"], ["--peers", "http://HOST:PORT"]),
    "peers-no-scheme": (["--peers", "127.0.0.1:19211"], ["--peers", "scheme"]),
    "port-range": (["--port", "70000"], ["--port", "1-65535"]),
    "port-not-int": (["--port", "abc"], ["--port", "invalid int"]),
    "mqtt-without-broker": (["--transport", "mqtt"], ["--broker", "mqtt://"]),
    "log-level": (["--log-level", "verbose"], ["--log-level", "debug, info"]),
    "log-format": (["--log-format", "xml"], ["--log-format", "json"]),
    "compress-kind": (["--compress", "gzip"], ["--compress", "f16", "int8", "topk:FRACTION"]),
    "compress-fraction": (["--compress", "topk:1.5"], ["--compress", "FRACTION <= 1", "1.5"]),
    "toml-type": (["--config", "type.toml"], ["key 'port'", "type.toml", "integer", "eighty"]),
    "toml-ture": (["--config", "ture.toml"], ["key 'independent-init'", "true or false", "ture"]),
    "toml-unknown-key": (["--config", "unknown.toml"], ["sample-sise", "unknown.toml"]),
    "config-missing": (["--config", "nosuch.toml"], ["--config", "nosuch.toml"]),
    "shard": (["--shard", "5/3"], ["--shard", "0 <= I < N"]),
    "advertise": (["--advertise", "10.0.0.5:8470"], ["--advertise", "scheme"]),
    "broker-scheme": (["--transport", "mqtt", "--broker", "tcp://127.0.0.1:1883"], ["--broker", "mqtts"]),
    "mqtt-ca-missing": (["--transport", "mqtt", "--broker", "mqtts://127.0.0.1:8883", "--mqtt-ca", "no.pem"],
                        ["--mqtt-ca", "no such file"]),
}


@pytest.mark.parametrize("case", list(FAST_CASES), ids=list(FAST_CASES))
def test_bad_input_is_one_line_and_exit_2_before_torch(files: Path, case: str) -> None:
    args, expected = FAST_CASES[case]
    port = str(free_ports(1)[0])
    p, _, torch_loaded = run_cli(files, "start", "--port", port, "--state-dir", "st", *args)
    assert p.returncode == 2, p.stderr
    line = one_line(p)
    for text in expected:
        assert text in line, line
    assert not torch_loaded
    assert not (files / "st").exists()


def test_bool_from_the_environment_is_checked(tmp_path: Path) -> None:
    p, _, _ = run_cli(tmp_path, "start", "--state-dir", "st", env={"GOSSIPNODE_INDEPENDENT_INIT": "ture"})
    assert p.returncode == 2 and "GOSSIPNODE_INDEPENDENT_INIT" in one_line(p)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["model-factory", "device-cuda"])
def test_model_and_device_checks_need_torch_but_are_one_line(files: Path, case: str) -> None:
    import torch
    args = {"model-factory": ["--model", "foo.bar:baz"], "device-cuda": ["--device", "cuda"]}[case]
    if case == "device-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p, _, _ = run_cli(files, "start", "--port", str(free_ports(1)[0]), "--state-dir", "st",
                      "--mnist1d-samples", "2000", *args)
    assert p.returncode == 2, p.stderr
    line = one_line(p)
    assert args[0] in line and ("foo" in line if case == "model-factory" else "CUDA is not available" in line)
    assert not (files / "st").exists()


def test_port_in_use_is_reported_at_once_and_leaves_no_files(tmp_path: Path) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        p, took, torch_loaded = run_cli(tmp_path, "start", "--port", str(port), "--state-dir", "st")
    finally:
        s.close()
    assert p.returncode == 2
    line = one_line(p)
    assert f"--port {port}" in line and "in use" in line
    assert not torch_loaded          # bound before torch and the data load
    assert took < 3.0, took          # < 1 s on an idle machine (README); generous for loaded CI
    assert sorted(os.listdir(tmp_path)) == ["torch-flag"]   # no state dir, no identity key


def test_version_and_help_do_not_import_torch(tmp_path: Path) -> None:
    p, _, torch_loaded = run_cli(tmp_path, "--version")
    assert p.returncode == 0 and p.stdout.strip().startswith("gossipnode ")
    assert not torch_loaded
    p, _, torch_loaded = run_cli(tmp_path, "start", "--help")
    assert p.returncode == 0 and not torch_loaded
    # --help of start shows the defaults
    text = " ".join(p.stdout.split())
    for d in ("(default 8470", "(default: cnn1d)", "(default: 20)", "(default: text)"):
        assert d in text, d


def test_status_command_does_not_import_torch(tmp_path: Path) -> None:
    p, _, torch_loaded = run_cli(tmp_path, "status", "http://127.0.0.1:9")
    assert p.returncode == 1 and "no node answers" in p.stderr
    assert not torch_loaded


@pytest.mark.slow
def test_example_config_loads(tmp_path: Path) -> None:
    from gossipnode.runtime.config import load_config
    cfg = load_config(str(ROOT / "examples" / "node.toml"), env={})
    assert cfg.port == 8470 and cfg.state_dir == "./gossipnode-state" and cfg.sample_size == 10
    p, _, _ = run_cli(tmp_path, "start", "--config", str(ROOT / "examples" / "node.toml"), "--port",
                      str(free_ports(1)[0]), "--state-dir", "st", "--mnist1d-samples", "2000", "--check")
    assert p.returncode == 0, p.stderr
    assert "configuration OK" in p.stdout and not (tmp_path / "st").exists()


def test_config_lists_match_the_registries() -> None:
    from gossipnode.runtime import configcheck
    from gossipnode.learn.aggregation import available_stages
    from gossipnode.learn.models import BUILTIN_MODELS
    assert set(configcheck.BUILTIN_MODELS) == set(BUILTIN_MODELS)
    stages = available_stages()
    assert set(configcheck.FILTERS) == set(stages["filter"])
    assert set(configcheck.COMBINERS) == set(stages["combine"])
    assert set(configcheck.CORRECTIONS) == set(stages["correct"])


def test_cluster_checks_the_node_settings_once(tmp_path: Path) -> None:
    p, _, torch_loaded = run_cli(tmp_path, "cluster", "--nodes", "2", "--filter", "krumm", "--dir", "c")
    assert p.returncode == 2 and "--filter" in one_line(p)
    assert not torch_loaded and not (tmp_path / "c").exists()


def test_load_config_types_per_layer(tmp_path: Path) -> None:
    from gossipnode.runtime.config import ConfigError, load_config
    f = tmp_path / "n.toml"
    f.write_text('lr = 1\npeers = ["http://127.0.0.1:1", "http://127.0.0.1:2"]\nindependent-init = true\n')
    cfg = load_config(str(f), env={"GOSSIPNODE_SAMPLE_SIZE": "3", "GOSSIPNODE_BETA": "0.25",
                                   "GOSSIPNODE_INDEPENDENT_INIT": "off"})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and len(cfg.peers) == 2
    assert cfg.sample_size == 3 and cfg.beta == 0.25 and cfg.independent_init is False
    for env, key in (({"GOSSIPNODE_PORT": "80.5"}, "GOSSIPNODE_PORT"), ({"GOSSIPNODE_LR": "nan"}, "GOSSIPNODE_LR"),
                     ({"GOSSIPNODE_INDEPENDENT_INIT": "ture"}, "GOSSIPNODE_INDEPENDENT_INIT")):
        with pytest.raises(ConfigError, match=key):
            load_config(env=env)
    f.write_text("sample-size = 2.5\n")
    with pytest.raises(ConfigError, match="key 'sample-size' in .* must be an integer"):
        load_config(str(f), env={})
    f.write_text('rounds = true\n')   # a TOML bool is not an integer
    with pytest.raises(ConfigError, match="key 'rounds'"):
        load_config(str(f), env={})


def test_history_sketch_must_be_zero_or_a_power_of_two() -> None:
    from gossipnode.runtime import configcheck
    from gossipnode.runtime.config import ConfigError, NodeConfig
    for ok in (0, 1, 64, 128, 1024):
        configcheck.check(NodeConfig(history_sketch=ok), set())
    for bad in (-1, 100, 2048):
        with pytest.raises(ConfigError, match="--history-sketch"):
            configcheck.check(NodeConfig(history_sketch=bad), set())
    from gossipnode.sim import SimConfig
    with pytest.raises(ValueError, match="history_sketch"):
        SimConfig(history_sketch=100)
