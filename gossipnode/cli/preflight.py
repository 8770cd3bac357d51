"""Checks `gossipnode start` runs before it starts a node, cheapest first, each failing with one
line that names the flag (`StartError`, exit status 2):

1. the state dir can be used (nothing is created: a start that fails leaves no files behind);
2. the port is free: it is bound here, before torch or data load, and handed to the node;
3. the data (loaded once; the node reuses it), the model factory and the device (torch).
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any


class StartError(Exception):
    """A start cannot go on; the message is the one line to print."""


def check_state_dir(state_dir: str) -> None:
    """The state dir is a writable directory (or can be created) and its identity key is valid."""
    d = Path(state_dir)
    if d.exists() and not d.is_dir():
        raise StartError(f"--state-dir {state_dir}: exists and is not a directory")
    probe = d
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise StartError(f"--state-dir {state_dir}: {probe} is a file, not a directory")
    try:  # a real write (read-only file systems, permissions), removed at once
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".gossipnode-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise StartError(f"--state-dir {state_dir}: cannot write in {probe} ({e.strerror or e})") from None
    key = d / "identity.key"
    if key.exists():
        try:
            from gossipnode.wire.identity import Identity
            Identity.load_or_create(key)
        except (OSError, ValueError) as e:
            raise StartError(f"--state-dir {state_dir}: identity.key is unusable ({e}); "
                             "restore it, or move it away to start with a new identity") from None


def check_files(cfg: Any) -> None:
    """Files the settings name that are read later (the data file is checked by loading it)."""
    if cfg.mqtt_ca and "mqtt" in cfg.transport and not Path(cfg.mqtt_ca).is_file():
        raise StartError(f"--mqtt-ca {cfg.mqtt_ca}: no such file")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (SO_REUSEADDR, as the HTTP server would bind it)."""
    try:
        family, type_, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise StartError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    s = socket.socket(family, type_, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.listen(128)
    except OSError as e:
        s.close()
        why = "already in use (another node or program listens there)" if e.errno == 98 else e.strerror or str(e)
        raise StartError(f"--port {port}: cannot listen on {host}:{port}: {why}") from None
    s.setblocking(False)
    return s


def check_heavy(cfg: Any) -> str:
    """Data, model and device (loads torch). Returns a one-line summary of what will run."""
    from gossipnode.learn.data import DataError
    from gossipnode.learn.dataset import load_dataset
    try:
        ds = load_dataset(cfg)
    except (DataError, ValueError, OSError) as e:
        what = f"--data {cfg.data}" if cfg.data else f"--dataset {cfg.dataset}"
        msg = str(e)
        if cfg.data and msg.startswith(f"{cfg.data}: "):
            msg = msg[len(cfg.data) + 2:]
        raise StartError(f"{what}: {msg}") from None
    from gossipnode.learn.models import build_model
    try:
        model = build_model(cfg.model, ds.input_shape, ds.num_classes, cfg.seed)
    except Exception as e:  # a user's factory may raise anything
        raise StartError(f"--model {cfg.model}: {e}") from None
    from gossipnode.learn.trainer import resolve_device
    try:
        device = resolve_device(cfg.device)
    except ValueError as e:
        raise StartError(f"--device {cfg.device}: {e}") from None
    params = sum(p.numel() for p in model.parameters())
    return (f"data: {len(ds)} training and {len(ds.x_test)} test samples of shape {ds.input_shape}, "
            f"{ds.num_classes} classes; model {cfg.model} ({params:,} parameters) on {device}")
