"""Transports move opaque, already-encoded frames between peer addresses.

One registry names them: `REGISTRY` maps a ``--transport`` name to a factory that builds the
transport from `TransportOptions` (plain values). Adding a transport is one new module (a class
with ``from_options``) and one line in `REGISTRY`; the node only calls `build_transports`.
Factories import their module when called, so checking names (the CLI's config check) loads no
aiohttp or aiomqtt.

May import: the standard library, wire/ and transport/ (never config, the node or runtime).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Collection

from .base import Transport, TransportOptions

Factory = Callable[[TransportOptions], Transport]


def _lazy(module: str, cls: str) -> Factory:
    """A factory that imports `module` (relative to this package) only when it builds."""
    def build(options: TransportOptions) -> Transport:
        return getattr(importlib.import_module(module, __name__), cls).from_options(options)
    return build


REGISTRY: dict[str, Factory] = {
    "http": _lazy(".http", "HttpTransport"),
    "mqtt": _lazy(".mqtt", "MqttTransport"),
}


def choices() -> str:
    """The allowed values as errors list them, e.g. "http, mqtt or http,mqtt"."""
    names = list(REGISTRY)
    return names[0] if len(names) == 1 else f"{', '.join(names)} or {','.join(names)}"


def parse_transports(spec: str) -> list[str]:
    """The names in a --transport value ("http,mqtt"), in registry order; ValueError names unknown ones."""
    wanted = {t.strip() for t in spec.split(",") if t.strip()}
    unknown = wanted - set(REGISTRY)
    if unknown:
        raise ValueError(f"unknown transport(s) {sorted(unknown)}: use {choices()}")
    return [n for n in REGISTRY if n in wanted]


def build_transports(spec: str, options: TransportOptions, skip: Collection[str] = ()) -> list[Transport]:
    """Build the transports named in `spec` (every name is checked), except those in `skip`."""
    return [REGISTRY[n](options) for n in parse_transports(spec) if n not in skip]


__all__ = ["REGISTRY", "Factory", "Transport", "TransportOptions", "build_transports", "choices",
           "parse_transports"]
