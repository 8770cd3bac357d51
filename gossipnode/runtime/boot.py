"""Setting a node up: its protocol core, the join proof-of-work, TLS, and the per-source join
limit. Plain functions and one small class; nothing here knows the node."""
from __future__ import annotations

import json
import logging
import random
import time
from collections import OrderedDict
from pathlib import Path

from gossipnode.core.auth import RecordAuth, pow_bits, solve_pow
from gossipnode.core.gossip import GossipConfig
from gossipnode.core.gossip_peer import GossipPeerCore
from gossipnode.core.interface import ProtocolCore
from gossipnode.core.modest import ModestCore

from . import checkpoint
from .config import NodeConfig

log = logging.getLogger("gossipnode.node")


def make_core(cfg: NodeConfig, pk: bytes, addresses: tuple[str, ...], model: bytes, index: int,
              auth: RecordAuth, pow_nonce: int) -> ProtocolCore:
    rng = random.Random(int.from_bytes(pk[:8], "big"))
    if cfg.protocol == "gossip":
        gcfg = GossipConfig(interval=cfg.gossip_interval, max_rounds=cfg.rounds or None,
                            failure_backoff=max(10.0, 3 * cfg.gossip_interval))
        return GossipPeerCore(gcfg, pk, addresses, model, rng, index=index, auth=auth,
                              max_peers=cfg.max_peers, pow_nonce=pow_nonce)
    # probe nonces must be unpredictable (a joiner proves its address by echoing one)
    return ModestCore(cfg.modest(), pk, addresses, model, rng, index=index, auth=auth,
                      secret_rng=random.SystemRandom(), pow_nonce=pow_nonce)


def join_pow(state_dir: Path, pk: bytes, bits: int) -> int:
    """--join-pow BITS: find this key's proof-of-work nonce once (about 2^BITS hashes), cached."""
    if bits <= 0:
        return 0
    path = state_dir / "join_pow.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("public_key") == pk.hex() and pow_bits(pk, int(cached["nonce"])) >= bits:
            return int(cached["nonce"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    t0 = time.monotonic()
    nonce = solve_pow(pk, bits)
    log.info("join proof-of-work: %d bits in %.2f s", bits, time.monotonic() - t0)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"public_key": pk.hex(), "bits": bits, "nonce": nonce}))
    except OSError as e:
        log.warning("cannot cache the join proof-of-work: %s", e)
    return nonce


def ssl_context(cert: str, key: str):
    """--tls-cert/--tls-key: the REST and HTTP-transport port speaks TLS (issue 13)."""
    if not cert:
        return None
    import ssl
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class JoinLimiter:
    """Token bucket per network source for JOIN adverts of non-members (the per-key limit is
    the core's): `rate` per second, bursts of twice that (a local cluster joining at once)."""

    def __init__(self, rate: float, max_sources: int = 4096) -> None:
        self.rate = rate
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # source -> (tokens, t)

    def allow(self, source: str | None, now: float) -> bool:
        if source is None or self.rate <= 0:
            return True
        burst = 2 * self.rate
        tokens, t = self._buckets.pop(source, (burst, now))
        tokens = min(burst, tokens + (now - t) * self.rate)
        ok = tokens >= 1
        self._buckets[source] = (tokens - 1 if ok else tokens, now)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return ok


def resume(state_dir: Path, learner) -> tuple[tuple, dict] | None:
    """The checkpointed model and its metadata, if there is one this learner can use."""
    resumed = checkpoint.load(state_dir)
    if resumed is None:
        return None
    model, meta = resumed
    if (why := learner.compatible(model)) is not None:
        log.warning("ignoring checkpoint: %s", why)
        return None
    log.info("resumed from checkpoint: round %d, model %s", int(meta.get("round", 0)), meta.get("model"))
    return model, meta


def http_transport(cfg: NodeConfig, app, path_prefix: str, max_size: int):
    """The HTTP transport, built by the node itself (not from the registry): it also serves REST."""
    from gossipnode.transport.http import HttpTransport
    return HttpTransport(
        app, cfg.address + path_prefix, max_size, timeout=cfg.http_timeout, path_prefix=path_prefix,
        budget=int(cfg.inbound_budget_mb * (1 << 20)) or max_size, min_rate=cfg.http_min_rate_mb * (1 << 20),
        local_host=cfg.host, answer_timeout=min(cfg.http_timeout, max(1.0, cfg.ping_timeout)))
