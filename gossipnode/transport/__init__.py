"""Transports move opaque, already-encoded frames between peer addresses."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gossipnode.runtime.config import NodeConfig
    from .base import Transport


def extra_transports(cfg: NodeConfig, node_id: str) -> list[Transport]:
    """Transports besides HTTP chosen by --transport (HTTP itself is wired by the node)."""
    names = {t.strip() for t in cfg.transport.split(",") if t.strip()}
    unknown = names - {"http", "mqtt"}
    if unknown:
        raise ValueError(f"unknown transport(s) {sorted(unknown)}: use http, mqtt or http,mqtt")
    out: list[Transport] = []
    if "mqtt" in names:
        from .mqtt import MqttTransport  # noqa: F401  (written by the MQTT issue)
        out.append(MqttTransport.from_config(cfg, node_id))
    return out
