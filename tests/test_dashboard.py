"""The dashboard (`GET /`) in a real headless Chromium (Debian's `chromium`; `scripts/test`
installs it, the browser tests skip when it is missing), the API token (401, constant-time
check, the page's token form, `gossipnode status --api-token`) and TLS on the REST port.

Two kinds of back end: the real API routes over a stand-in node whose status holds hostile
text (a rejection reason, an address and a node id with markup: it must show as text), and
real node processes (what a person sees on a running 2-node network)."""
from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections import OrderedDict
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from conftest import ROOT, free_ports, get_json, wait_for

from gossipnode.api.app import setup_routes
from gossipnode.runtime.config import NodeConfig
from gossipnode.runtime.telemetry import Telemetry

STATIC = ROOT / "gossipnode" / "api" / "static"
EVIL = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def find_chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


def chromium(url: str, tmp: Path, budget_ms: int = 4000, screenshot: Path | None = None,
             size: str = "1280,1000") -> str:
    """The DOM after the page ran `budget_ms` of virtual time (timers and fetches included)."""
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; scripts/test does it)")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            f"--user-data-dir={tmp / 'chromium-profile'}", f"--virtual-time-budget={budget_ms}",
            f"--window-size={size}", "--hide-scrollbars"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class Dom(HTMLParser):
    """Text by element id (what a person reads), and every element seen."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str | None]] = []
        self.text: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.hidden: set[str] = set()
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        self.handle_data(" ")  # cells and lines read apart
        if a.get("id"):
            self.text.setdefault(a["id"], "")
            if "hidden" in a:
                self.hidden.add(a["id"])
        if tag not in ("br", "img", "input", "link", "meta", "line", "polyline", "hr"):
            self.stack.append((tag, a.get("id")))

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for _, i in self.stack:
            if i:
                self.text[i] += data

    def __getitem__(self, id_: str) -> str:
        return " ".join(self.text[id_].split())


# ---- a stand-in node behind the real routes ---------------------------------------------------
def fake_node(token: str = "") -> Telemetry:
    status = {
        "node_id": "ab" * 8 + EVIL, "public_key": "00" * 32, "network_id": "net" + EVIL,
        "address": "http://127.0.0.1:1", "addresses": ["http://127.0.0.1:1/" + EVIL],
        "round": 12, "model_round": 12, "role": "training", "peers_known": 2, "peers_active": 1,
        "model_hash": "11" * 32, "rounds_trained": 5, "rounds_aggregated": 3,
        "last_eval": {"round": 12, "accuracy": 0.8125, "loss": 0.5432, "samples": 400, "model_hash": "11" * 32},
        "bytes_sent": 3 * 1024 * 1024, "bytes_received": 2048, "messages_sent": 10, "messages_received": 9,
        "send_failures": 0, "messages_rejected": {"bad_signature": 4, EVIL: 7}, "uptime_s": 95.0,
        "device": "cpu", "version": "0.1.0", "protocol": "modest",
        "last_aggregation": {"round": 11, "contributors": 3, "weights": {"c1" * 8: 0.6, "c2" * 8: 0.4, EVIL: 0.0},
                             "zeroed": [EVIL], "seconds": 0.1},
    }
    peers = [{"node_id": "p1" * 8, "public_key": "", "addresses": ["http://127.0.0.1:2"], "last_active_round": 12,
              "index": 1, "status": "join", "active": True},
             {"node_id": "p2" * 8 + EVIL, "public_key": "", "addresses": ["mqtt://" + EVIL],
              "last_active_round": 4, "index": 1, "status": "join", "active": False}]
    rounds = OrderedDict((k, {"round": k, "roles": ["trainer"] if k % 2 else [EVIL], "participants": [],
                              "accuracy": 0.1 + 0.06 * k, "loss": 2.0 - 0.12 * k, "started_at": 0.0,
                              "duration_s": 1.5, "events": []}) for k in range(1, 13))
    tel = Telemetry(NodeConfig(api_token=token).api_token)   # what the REST app reads
    tel.parts, tel.peers, tel.current = [lambda: status], lambda: peers, lambda: b"\x11" * 32
    tel.rounds.update(rounds)
    return tel


@pytest.fixture
async def fake_api():
    runners = []

    async def make(token: str = "", node: SimpleNamespace | None = None) -> str:
        app = web.Application()
        setup_routes(app, node or fake_node(token))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        (port,) = free_ports(1)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"
    yield make
    for r in runners:
        await r.cleanup()


async def in_browser(url: str, tmp: Path, **kw) -> Dom:
    html = await asyncio.to_thread(chromium, url, tmp, **kw)
    return Dom(html)


def test_dashboard_assets_ship_in_the_package_and_never_parse_markup() -> None:
    js = (STATIC / "dashboard.js").read_text()
    html = (STATIC / "index.html").read_text()
    for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert bad not in js
    # no CDN, no inline script: everything comes from this node
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "<script>" not in html and "<style>" not in html
    text = (ROOT / "pyproject.toml").read_text()
    assert '"static/*"' in text


async def test_dashboard_shows_hostile_network_text_as_text(fake_api, tmp_path) -> None:
    url = await fake_api()
    async with aiohttp.ClientSession() as s, s.get(url + "/") as r:
        assert r.status == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"]
    dom = await in_browser(url + "/", tmp_path)
    # what a person sees
    assert dom["round"] == "12" and dom["role"] == "training"
    assert dom["accuracy"] == "0.813" and dom["loss"] == "0.543"
    assert dom["peers-count"] == "2 / 1" and dom["bytes"] == "3.0 MiB / 2.0 KiB"
    assert "bad_signature 4" in dom["rejections"]
    assert "round 11 · 3 contributors" in dom["agg-summary"]
    assert "c1c1c1c1c1c1c1c1 0.6000" in dom["aggregation"]
    assert dom["conn"].startswith("live")
    tags = dict(dom.tags[i] for i in range(len(dom.tags)) if dom.tags[i][0] == "svg")
    assert tags["svg"].get("data-points") == "12"
    assert sum(1 for t, _ in dom.tags if t == "polyline") == 2
    peers = dom["peers"]
    assert "p1p1p1p1p1p1p1p1" in peers and "active · now" in peers and "inactive · 8 rounds ago" in peers
    # the markup from the network is text on the page, never elements
    assert EVIL in dom["rejections"] and EVIL[:16] in dom["zeroed"] and EVIL in dom["network"]
    assert "mqtt://" + EVIL in peers and EVIL in dom["rounds"]
    assert EVIL[:16] in dom["aggregation"]
    scripts = [a for t, a in dom.tags if t == "script"]
    assert [a["src"] for a in scripts] == ["dashboard/dashboard.js"]
    assert not [a for t, a in dom.tags if t == "img"]
    assert not any("onerror" in a for _, a in dom.tags)


async def test_api_token_guards_state_and_the_page_asks_for_it(fake_api, tmp_path) -> None:
    token = "s3cret-t0ken"
    url = await fake_api(token)
    async with aiohttp.ClientSession() as s:
        for path in ("/v1/status", "/v1/peers", "/v1/rounds", "/v1/models/current", "/v1/models/" + "11" * 32,
                     "/metrics"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                            {"Authorization": "Basic " + token}):
                async with s.get(url + path, headers=headers) as r:
                    assert r.status == 401, (path, headers)
                    assert r.headers["WWW-Authenticate"].startswith("Bearer")
        async with s.get(url + "/v1/status", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200 and (await r.json())["round"] == 12
        for path in ("/v1/health", "/", "/dashboard/dashboard.js", "/openapi.json"):  # open
            async with s.get(url + path) as r:
                assert r.status == 200, path
        async with s.get(url + "/v1/health") as r:
            assert await r.json() == {"status": "ok", "version": "0.1.0", "uptime_s": pytest.approx(0, abs=60),
                                      "auth_required": True}
        async with s.get(url + "/dashboard/..%2Fapp.py") as r:
            assert r.status == 404
    # no token: the page shows the token form and no data
    dom = await in_browser(url + "/", tmp_path / "a")
    assert "auth" not in dom.hidden and "main" in dom.hidden and dom["conn"] == "needs a token"
    # a wrong one: still the form, saying so
    dom = await in_browser(url + "/#token=nope", tmp_path / "b")
    assert "main" in dom.hidden and dom["auth-error"] == "the token was not accepted"
    # the right one (kept in sessionStorage, removed from the address): the data
    dom = await in_browser(url + "/#token=" + token, tmp_path / "c")
    assert "auth" in dom.hidden and "main" not in dom.hidden and dom["round"] == "12"


class Browser:
    """Headless Chromium driven over the DevTools protocol (aiohttp's websocket client): for
    what --dump-dom cannot do (type into the page, read JavaScript state)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.proc: asyncio.subprocess.Process | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws = None
        self._id = 0

    async def __aenter__(self) -> Browser:
        exe = find_chromium()
        if exe is None:
            pytest.skip("chromium not installed (Debian: apt-get install chromium; scripts/test does it)")
        self.proc = await asyncio.create_subprocess_exec(
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
            f"--user-data-dir={self.tmp / 'cdp-profile'}", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        assert self.proc.stderr is not None
        port = None
        async with asyncio.timeout(60):
            while port is None:
                line = (await self.proc.stderr.readline()).decode()
                assert line, "chromium exited before it listened"
                if "DevTools listening on ws://" in line:
                    port = int(line.split("ws://127.0.0.1:")[1].split("/")[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
            page = next(t for t in await r.json() if t["type"] == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def call(self, method: str, **params):
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=30)
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg["result"]

    async def js(self, expression: str):
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in res, res
        return res["result"].get("value")

    async def until(self, expression: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while True:  # (the page may still be loading: not there yet reads as false)
            v = await self.js(f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()")
            if v:
                return v
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.2)


async def test_a_person_types_the_token_and_no_network_script_runs(fake_api, tmp_path) -> None:
    token = "typed-t0ken"
    node = fake_node(token)
    url = await fake_api(token, node)
    async with Browser(tmp_path) as b:
        await b.call("Page.navigate", url=url + "/")
        await b.until("!document.getElementById('auth').hidden")
        assert await b.js("document.getElementById('main').hidden") is True
        await b.js(f"""(() => {{ const i = document.getElementById('auth-token'); i.value = {token!r};
                    document.getElementById('auth').requestSubmit(); return true; }})()""")
        await b.until("document.getElementById('round').textContent === '12'")
        assert await b.js("sessionStorage.getItem('gossipnode.apiToken')") == token
        assert await b.js("document.getElementById('auth').hidden") is True
        # the hostile strings were rendered, and none of their script ran
        assert await b.js("document.getElementById('rejections').textContent.includes('<script>')")
        assert await b.js("typeof window.pwned") == "undefined"
        assert await b.js("document.querySelectorAll('script').length") == 1
        # it updates live: the node moves on, the page follows within a poll or two
        node.status()["round"] = 13
        node.status()["messages_rejected"]["not_in_sample"] = 2
        t0 = time.monotonic()
        await b.until("document.getElementById('round').textContent === '13'", timeout=10)
        assert time.monotonic() - t0 < 5
        assert await b.js("document.getElementById('rejections').textContent.includes('not_in_sample2')")
        node.status()["round"] = 12
        # a reload in the same tab keeps the token (sessionStorage); "forget token" drops it
        await b.call("Page.reload")
        await b.until("document.getElementById('round').textContent === '12'")
        await b.js("document.getElementById('forget-token').click(), true")
        await b.until("!document.getElementById('auth').hidden")
        assert await b.js("sessionStorage.getItem('gossipnode.apiToken')") is None


# ---- TLS on the REST port ---------------------------------------------------------------------
def self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls_and_token_flags_are_checked(tmp_path) -> None:
    from gossipnode.runtime.config import load_config
    (tmp_path / "pw").write_text("broker-secret\n")
    cfg = load_config(env={"GOSSIPNODE_MQTT_PASSWORD_FILE": str(tmp_path / "pw")})
    assert cfg.mqtt_password == "broker-secret"
    assert load_config(env={"GOSSIPNODE_MQTT_PASSWORD_FILE": str(tmp_path / "pw"),
                            "GOSSIPNODE_MQTT_PASSWORD": "given"}).mqtt_password == "given"
    with pytest.raises(ValueError, match="--tls-cert and --tls-key"):
        load_config(env={}, overrides={"tls_cert": "x.pem"})
    with pytest.raises(ValueError, match="--tls-cert x.pem: no such file"):
        load_config(env={}, overrides={"tls_cert": "x.pem", "tls_key": "y.pem"})
    with pytest.raises(ValueError, match="--api-token-file"):
        load_config(env={}, overrides={"api_token_file": "/nonexistent/token"})


async def test_node_serves_tls_and_token_and_status_cli_sends_it(tmp_path) -> None:
    from gossipnode.runtime.config import load_config
    from gossipnode.runtime.node import Node
    cert, key = self_signed(tmp_path)
    (tmp_path / "token").write_text("tok-123\n")
    (port,) = free_ports(1)
    cfg = load_config(env={}, overrides={
        "port": port, "state_dir": str(tmp_path / "n"), "mnist1d_samples": 1000, "network_id": "t",
        "bootstrap_wait": 600, "bootstrap_timeout": 600, "tls_cert": str(cert), "tls_key": str(key),
        "api_token_file": str(tmp_path / "token")})
    assert cfg.api_token == "tok-123" and cfg.address == f"https://127.0.0.1:{port}"
    n = Node(cfg)
    await n.start()
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as s:
            async with s.get(cfg.address + "/v1/health", ssl=ctx) as r:
                assert r.status == 200
            async with s.get(cfg.address + "/v1/models/current", ssl=ctx) as r:
                assert r.status == 401
            async with s.get(cfg.address + "/v1/models/current", ssl=ctx,
                             headers={"Authorization": "Bearer tok-123"}) as r:
                assert r.status == 200 and r.headers["X-Model-Hash"] == n.current.hex()
            with pytest.raises(aiohttp.ClientError):  # an unverified certificate is refused
                async with s.get(cfg.address + "/v1/health") as r:
                    pass
            with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port gets nothing
                async with s.get(f"http://127.0.0.1:{port}/v1/health") as r:
                    assert r.status >= 400
        # the status command, as a user runs it
        env = {k: v for k, v in os.environ.items() if k != "GOSSIPNODE_API_TOKEN"}

        def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "gossipnode", "status", cfg.address, "--cacert",
                                   str(cert), "--json", *args], capture_output=True, text=True, timeout=60,
                                  env=env | extra, cwd=ROOT, check=False)
        no, yes, via_env = await asyncio.gather(
            asyncio.to_thread(cli), asyncio.to_thread(cli, "--api-token", "tok-123"),
            asyncio.to_thread(cli, GOSSIPNODE_API_TOKEN="tok-123"))
        assert no.returncode == 1 and "needs an API token" in no.stderr and "Traceback" not in no.stderr
        assert yes.returncode == 0 and '"node_id"' in yes.stdout, yes.stderr
        assert via_env.returncode == 0, via_env.stderr
    finally:
        await n.stop(graceful=False)


# ---- a real 2-node network in the browser -----------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_dashboard_of_a_running_network(node_procs, tmp_path) -> None:
    if find_chromium() is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; scripts/test does it)")
    token = "dash-token"
    os.environ["GOSSIPNODE_API_TOKEN"] = token  # the node processes inherit it
    try:
        nodes = node_procs(2, ["--mnist1d-samples", "1200", "--sample-size", "2", "--bootstrap-wait", "1",
                               "--ping-timeout", "2", "--aggregation-timeout", "5", "--round-timeout", "10"])
    finally:
        del os.environ["GOSSIPNODE_API_TOKEN"]
    hdr = {"Authorization": f"Bearer {token}"}

    def status(n) -> dict:
        import json
        import urllib.request
        with urllib.request.urlopen(urllib.request.Request(n.url + "/v1/status", headers=hdr), timeout=3) as r:
            return json.loads(r.read())
    for n in nodes:
        deadline = time.monotonic() + 90
        while True:
            try:
                get_json(n.url + "/v1/health")
                break
            except OSError:
                assert time.monotonic() < deadline, n.log()
                time.sleep(0.5)

    def evaluated() -> bool:
        try:
            return all((s := status(n))["last_eval"] and s["last_eval"]["round"] >= 3 and s["peers_known"] == 1
                       for n in nodes)
        except OSError:
            return False
    wait_for(evaluated, 150, "2 nodes past round 3", nodes)
    dom = Dom(chromium(nodes[0].url + "/#token=" + token, tmp_path, budget_ms=3000))
    after = status(nodes[0])
    other = status(nodes[1])["node_id"]
    assert dom["node-id"] == after["node_id"]
    assert 3 <= int(dom["round"]) <= after["round"]
    assert dom["role"] in ("idle", "training", "aggregating")
    assert 0.0 < float(dom["accuracy"]) <= 1.0 and float(dom["loss"]) > 0
    assert dom["peers-count"].startswith("1 /") and other in dom["peers"]
    svg = next(a for t, a in dom.tags if t == "svg")
    assert int(svg["data-points"]) >= 3
    assert dom["conn"].startswith("live")
    if os.environ.get("GOSSIPNODE_SCREENSHOT"):  # scripts: refresh docs/dashboard.png
        chromium(nodes[0].url + "/#token=" + token, tmp_path / "shot", budget_ms=3000,
                 screenshot=Path(os.environ["GOSSIPNODE_SCREENSHOT"]), size="1280,1150")


def test_openapi_documents_every_route_and_its_protection() -> None:
    import json
    app = web.Application()
    setup_routes(app, fake_node("t"))
    doc = json.loads((ROOT / "gossipnode" / "api" / "openapi.json").read_text())
    routes = {r.resource.canonical for r in app.router.routes() if r.method == "GET"} - {"/dashboard/{name}"}
    assert routes <= set(doc["paths"]), routes - set(doc["paths"])
    assert doc["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"
    for path in ("/v1/status", "/v1/peers", "/v1/rounds", "/v1/models/current", "/v1/models/{hash}", "/metrics"):
        op = doc["paths"][path]["get"]
        assert {"apiToken": []} in op["security"] and "401" in op["responses"], path
    for path in ("/", "/v1/health", "/openapi.json"):
        assert "security" not in doc["paths"][path]["get"], path
    status = doc["components"]["schemas"]["Status"]["properties"]
    assert "last_aggregation" in status and "history_bytes_sent" in status


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_tls_nodes_peer_over_https(tmp_path) -> None:
    """--tls-cert on both: each advertises https://, trusts the other's certificate through
    SSL_CERT_FILE (here one self-signed certificate for 127.0.0.1), and they train together."""
    import json
    import urllib.request

    from conftest import NodeProcess
    cert, key = self_signed(tmp_path)
    ports = free_ports(2)
    urls = [f"https://127.0.0.1:{p}" for p in ports]
    env_before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(cert)  # the node processes inherit it
    procs = []
    try:
        for i, p in enumerate(ports):
            procs.append(NodeProcess(p, tmp_path / f"n{i}", [
                "--tls-cert", str(cert), "--tls-key", str(key), "--peers", urls[1 - i], "--shard", f"{i}/2",
                "--mnist1d-samples", "1200", "--sample-size", "2", "--bootstrap-wait", "1", "--ping-timeout", "2",
                "--aggregation-timeout", "5", "--round-timeout", "10"], tmp_path / f"n{i}.log").start())
    finally:
        if env_before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = env_before
    ctx = ssl.create_default_context(cafile=str(cert))

    def status(u: str) -> dict:
        with urllib.request.urlopen(u + "/v1/status", timeout=3, context=ctx) as r:
            return json.loads(r.read())

    def together() -> bool:
        try:
            st = [status(u) for u in urls]
        except OSError:
            return False
        return all(s["peers_known"] == 1 and s["rounds_trained"] >= 1 and s["round"] >= 3 for s in st)
    try:
        wait_for(together, 120, "2 TLS nodes training together", procs)
        peers = json.loads(urllib.request.urlopen(urls[0] + "/v1/peers", timeout=3, context=ctx).read())["peers"]
        assert peers[0]["addresses"] == [urls[1]]
        assert status(urls[0])["address"] == urls[0]
    finally:
        for p in procs:
            p.kill()
