"""REST routes: status, peers, rounds, content-addressed models, Prometheus metrics, OpenAPI."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack
from aiohttp import web

from ..jsonout import dumps

if TYPE_CHECKING:
    from ..node import Node

OPENAPI = Path(__file__).with_name("openapi.json")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def json_response(data, status: int = 200) -> web.Response:
    """aiohttp's json_response, but NaN/Infinity become null (always valid JSON)."""
    return web.json_response(data, status=status, dumps=dumps)


def setup_routes(app: web.Application, node: Node) -> None:
    async def status(_: web.Request) -> web.Response:
        return json_response(node.status())

    async def peers(_: web.Request) -> web.Response:
        return json_response({"peers": node.peers()})

    async def rounds(request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return json_response({"error": "limit must be an integer"}, status=400)
        items = list(node.rounds.values())[-max(1, min(limit, 1000)):]
        return json_response({"rounds": items})

    async def model(request: web.Request) -> web.Response:
        h = request.match_info["hash"].lower()
        if not _HASH.match(h):
            return json_response({"error": "model hash must be 64 hex characters"}, status=400)
        return model_response(h)

    async def current_model(_: web.Request) -> web.Response:
        return model_response(node.current.hex())

    def model_response(h: str) -> web.Response:
        m = node.store.get(bytes.fromhex(h))
        if m is None:
            return json_response({"error": "model not held by this node"}, status=404)
        # A plain msgpack document, no pickle: [[name, dtype, shape, bytes], ...]
        body = msgpack.packb([[t.name, t.dtype, list(t.shape), t.data] for t in m], use_bin_type=True)
        return web.Response(body=body, content_type="application/x-msgpack",
                            headers={"X-Model-Hash": h})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=prometheus(node), content_type="text/plain")

    async def openapi(_: web.Request) -> web.Response:
        return json_response(json.loads(OPENAPI.read_text()))

    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/peers", peers)
    app.router.add_get("/v1/rounds", rounds)
    app.router.add_get("/v1/models/current", current_model)
    app.router.add_get("/v1/models/{hash}", model)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)


def prometheus(node: Node) -> str:
    s = node.status()
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
