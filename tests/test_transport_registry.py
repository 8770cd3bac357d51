"""The transport registry: names -> factories built from plain TransportOptions; a transport
added to the registry is found by the config check and the node without changing either."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from aiohttp import web

from gossipnode import transport
from gossipnode.runtime.config import NodeConfig
from gossipnode.runtime.configcheck import ConfigError, check
from gossipnode.transport import REGISTRY, TransportOptions, build_transports, parse_transports
from gossipnode.transport.http import MESSAGES_PATH, HttpTransport
from gossipnode.transport.mqtt import MqttTransport

from conftest import free_ports

NID = "00112233aabbccdd"
OPTS = TransportOptions(NID, "t", 1 << 20, http_address="http://127.0.0.1:1", broker="mqtt://127.0.0.1:9",
                        mqtt_username="u", mqtt_password="p")


class Dummy:
    scheme = "dummy"

    def __init__(self, options: TransportOptions) -> None:
        self.options = options
        self.bound: tuple | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        return (f"dummy://{self.options.node_id}",)

    def bind(self, identity, addresses, on_peer, on_gone, on_reject) -> None:
        self.bound = (identity.node_id, addresses)

    async def start(self, handler) -> None: ...

    async def send(self, address: str, frame) -> None: ...

    async def stop(self) -> None: ...


@pytest.fixture
def dummy(monkeypatch):
    monkeypatch.setitem(REGISTRY, "dummy", Dummy)   # the one line a new transport adds


def test_unknown_name_is_one_clear_error() -> None:
    msg = "unknown transport(s) ['carrier-pigeon']: use http, mqtt or http,mqtt"
    with pytest.raises(ValueError) as e:
        build_transports("http,carrier-pigeon", OPTS)
    assert str(e.value) == msg
    cfg = NodeConfig(transport="http,carrier-pigeon")
    with pytest.raises(ConfigError, match=r"^--transport must be http, mqtt or http,mqtt; got 'http,carrier-pigeon'$"):
        check(cfg, set())


def test_names_in_registry_order_and_skip() -> None:
    assert parse_transports(" mqtt , http,") == ["http", "mqtt"]
    assert build_transports("http", OPTS, skip=("http",)) == []
    (m,) = build_transports("mqtt,http", OPTS, skip=("http",))
    assert isinstance(m, MqttTransport)
    assert (m.node_id, m.network_id, m.max_size, m.username, m.password, m.broker.port) == (
        NID, "t", 1 << 20, "u", "p", 9)


def test_http_from_options_adds_its_route_to_the_given_app() -> None:
    app = web.Application()
    (h,) = build_transports("http", TransportOptions(NID, "t", 4096, http_address="http://127.0.0.1:1/s/2",
                                                     app=app, path_prefix="/s/2", inbound_budget=8192))
    assert isinstance(h, HttpTransport) and h.addresses == ("http://127.0.0.1:1/s/2",)
    assert h.max_size == 4096 and h.budget.limit == 8192
    assert [r.resource.canonical for r in app.router.routes()] == ["/s/2" + MESSAGES_PATH]


def test_registered_transport_is_found_by_config_check_and_builder(dummy) -> None:
    assert transport.choices() == "http, mqtt, dummy or http,mqtt,dummy"
    check(NodeConfig(transport="http,dummy"), set())               # no ConfigError
    (d,) = build_transports("http,dummy", OPTS, skip=("http",))
    assert isinstance(d, Dummy) and d.options is OPTS


def test_node_builds_and_binds_a_registered_transport(dummy, tmp_path) -> None:
    from gossipnode.runtime.node import Node
    (port,) = free_ports(1)
    cfg = NodeConfig(port=port, state_dir=str(tmp_path / "n"), mnist1d_samples=200, network_id="t",
                     transport="http,dummy")
    n = Node(cfg)
    d = n.transports[-1]
    assert isinstance(d, Dummy) and d.options.node_id == n.id and d.options.network_id == "t"
    assert n.transports[0] is n.http
    assert d.bound == (n.id, (cfg.address, f"dummy://{n.id}"))


def test_transport_package_never_imports_config_or_the_node() -> None:
    """transport/ may import only itself and wire/ from the package (not even under TYPE_CHECKING)."""
    pkg = Path(transport.__file__).parent
    imported = []
    for f in sorted(pkg.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = ["gossipnode.transport", "gossipnode"][node.level - 1] + "." if node.level else ""
                imported.append((f.name, base + (node.module or "")))
            elif isinstance(node, ast.Import):
                imported += [(f.name, a.name) for a in node.names]
    ours = [(f, m) for f, m in imported if m.startswith("gossipnode")]
    assert ("mqtt.py", "gossipnode.wire.chunks") in ours and ("__init__.py", "gossipnode.transport.base") in ours
    assert [(f, m) for f, m in ours if not m.startswith(("gossipnode.transport", "gossipnode.wire"))] == []
