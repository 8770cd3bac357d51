"""REST routes: status, peers, rounds, content-addressed models, Prometheus metrics, OpenAPI,
a health probe and the dashboard (`GET /`).

With `--api-token` set, everything that reads the node's state (status, peers, rounds,
models, metrics) needs `Authorization: Bearer TOKEN`; open stay `/v1/health` (probes),
`/openapi.json`, the dashboard's static files (they hold no data; the page asks for the token)
and `POST /v1/messages` (peer frames are signed; the HTTP transport serves that route).
"""
from __future__ import annotations

import hmac
import json
import re
import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Protocol

import msgpack
from aiohttp import web

from .. import __version__
from gossipnode.api.jsonout import dumps



class Telemetry(Protocol):
    """What the REST app reads (runtime.telemetry.Telemetry provides it; the app never sees the node)."""
    api_token: str
    stopping: bool
    started_at: float
    rounds: Mapping[int, dict[str, Any]]

    def status(self) -> dict[str, Any]: ...

    def peers(self) -> list[dict[str, Any]]: ...

    def model(self, h: bytes) -> Any: ...

    def current(self) -> bytes: ...

OPENAPI = Path(__file__).with_name("openapi.json")
STATIC = Path(__file__).with_name("static")
# The dashboard's files: a fixed list (no path from the request ever reaches the file system).
DASHBOARD_FILES = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
# The page runs only its own script and talks only to this node: even if some text from the
# network were ever put into the page as markup, no inline script or foreign source would run.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_HASH = re.compile(r"^[0-9a-f]{64}$")


def json_response(data, status: int = 200) -> web.Response:
    """aiohttp's json_response, but NaN/Infinity become null (always valid JSON)."""
    return web.json_response(data, status=status, dumps=dumps)


def token_guard(token: str):
    """A decorator: the handler answers only requests with `Authorization: Bearer <token>`
    (compared in constant time); others get 401. With no token everything passes."""
    expected = token.encode()

    def wrap(handler):
        if not token:
            return handler

        async def guarded(request: web.Request) -> web.StreamResponse:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                return web.json_response(
                    {"error": "this endpoint needs Authorization: Bearer <api token>"}, status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="gossipnode"'})
            return await handler(request)
        return guarded
    return wrap


def setup_routes(app: web.Application, tel: Telemetry) -> None:
    protected = token_guard(tel.api_token)

    async def health(_: web.Request) -> web.Response:
        # For probes: open even with --api-token, and says nothing about the network.
        stopping = tel.stopping
        return json_response({"status": "stopping" if stopping else "ok", "version": __version__,
                              "uptime_s": round(time.time() - tel.started_at, 3),
                              "auth_required": bool(tel.api_token)},
                             status=503 if stopping else 200)

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(body=(STATIC / "index.html").read_bytes(), content_type="text/html",
                            charset="utf-8", headers=DASHBOARD_HEADERS)

    async def dashboard_file(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in DASHBOARD_FILES:
            raise web.HTTPNotFound()
        return web.Response(body=(STATIC / name).read_bytes(), content_type=DASHBOARD_FILES[name],
                            charset="utf-8", headers=DASHBOARD_HEADERS)

    async def status(_: web.Request) -> web.Response:
        return json_response(tel.status())

    async def peers(_: web.Request) -> web.Response:
        return json_response({"peers": tel.peers()})

    async def rounds(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return json_response({"error": "limit must be an integer"}, status=400)
        items = list(tel.rounds.values())[-max(1, min(limit, 1000)):]
        return json_response({"rounds": items})

    async def model(request: web.Request) -> web.Response:
        h = request.match_info["hash"].lower()
        if not _HASH.match(h):
            return json_response({"error": "model hash must be 64 hex characters"}, status=400)
        return model_response(h)

    async def current_model(_: web.Request) -> web.Response:
        return model_response(tel.current().hex())

    def model_response(h: str) -> web.Response:
        m = tel.model(bytes.fromhex(h))
        if m is None:
            return json_response({"error": "model not held by this node"}, status=404)
        # A plain msgpack document, no pickle: [[name, dtype, shape, bytes], ...]
        body = msgpack.packb([[t.name, t.dtype, list(t.shape), t.data] for t in m], use_bin_type=True)
        return web.Response(body=body, content_type="application/x-msgpack",
                            headers={"X-Model-Hash": h})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=prometheus(tel), content_type="text/plain")

    async def openapi(_: web.Request) -> web.Response:
        return json_response(json.loads(OPENAPI.read_text()))

    app.router.add_get("/", dashboard)
    app.router.add_get("/dashboard/{name}", dashboard_file)
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/status", protected(status))
    app.router.add_get("/v1/peers", protected(peers))
    app.router.add_get("/v1/rounds", protected(rounds))
    app.router.add_get("/v1/models/current", protected(current_model))
    app.router.add_get("/v1/models/{hash}", protected(model))
    app.router.add_get("/metrics", protected(metrics))
    app.router.add_get("/openapi.json", openapi)


def prometheus(tel: Telemetry) -> str:
    s = tel.status()
    ev = s["last_eval"] or {}
    lines = []

    def metric(name: str, kind: str, help_: str, value, labels: str = "") -> None:
        lines.append(f"# HELP gossipnode_{name} {help_}")
        lines.append(f"# TYPE gossipnode_{name} {kind}")
        lines.append(f"gossipnode_{name}{labels} {value}")

    metric("round", "gauge", "Current round estimate.", s["round"])
    metric("peers_known", "gauge", "Peers in the view.", s["peers_known"])
    metric("peers_active", "gauge", "Peers in the active set.", s["peers_active"])
    metric("rounds_trained_total", "counter", "Rounds this node trained.", s["rounds_trained"])
    metric("rounds_aggregated_total", "counter", "Rounds this node aggregated.", s["rounds_aggregated"])
    metric("bytes_sent_total", "counter", "Frame bytes sent.", s["bytes_sent"])
    metric("bytes_received_total", "counter", "Frame bytes accepted.", s["bytes_received"])
    metric("send_failures_total", "counter", "Frames that could not be delivered.", s["send_failures"])
    metric("eval_accuracy", "gauge", "Test accuracy of the latest model.", ev.get("accuracy", "NaN"))
    metric("eval_loss", "gauge", "Test loss of the latest model.", ev.get("loss", "NaN"))
    metric("uptime_seconds", "gauge", "Seconds since start.", s["uptime_s"])
    lines.append("# HELP gossipnode_messages_rejected_total Rejected inbound messages by reason.")
    lines.append("# TYPE gossipnode_messages_rejected_total counter")
    for reason, n in sorted(s["messages_rejected"].items()):
        lines.append(f'gossipnode_messages_rejected_total{{reason="{reason}"}} {n}')
    return "\n".join(lines) + "\n"
