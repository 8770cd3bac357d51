"""A real Mosquitto broker on a free loopback port, for tests (`mosquitto` fixture).

Import the fixture in a test module with `from mqtt_broker import mosquitto_fixture  # noqa: F401`.
`scripts/test` installs Mosquitto from Debian's packages when missing; tests skip (with a
clear message) only if no `mosquitto` binary can be found at all.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((c for c in CANDIDATES if Path(c).exists()), None)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """One Mosquitto process; `stop()` / `start()` again on the same port (restart tests)."""

    def __init__(self, exe: str, workdir: Path, port: int | None = None,
                 max_packet_size: int = 0) -> None:
        self.exe = exe
        self.port = port or _free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 10000",
        ]
        if max_packet_size:
            lines.append(f"max_packet_size {max_packet_size}")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> Broker:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} in {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return ""


@pytest.fixture(name="mosquitto")
def mosquitto_fixture(tmp_path_factory):
    """A started Broker (fresh per test); stopped afterwards."""
    exe = find_mosquitto()
    if exe is None:
        pytest.skip("mosquitto not found: install it (Debian: apt-get install -y mosquitto; "
                    "scripts/test does this) to run the MQTT tests")
    b = Broker(exe, tmp_path_factory.mktemp("mosquitto")).start()
    try:
        yield b
    finally:
        b.stop()
