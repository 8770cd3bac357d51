"""The node runtime: thin asyncio wiring of core, wire, transports, learner, store and REST API."""
from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from functools import partial
import time
from collections import Counter, OrderedDict, deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from gossipnode import __version__
from gossipnode.runtime import checkpoint, jsonout
from gossipnode.runtime.config import NodeConfig
from gossipnode.core import actions as act
from gossipnode.core.messages import Advertise, HistoryRecord, ModelData, ModelKind, ModelMsg, ModelRequest, Ping, Pong, Status
from gossipnode.core.messages import message_kind
from gossipnode.core.gossip import GossipConfig
from gossipnode.core.gossip_peer import GossipPeerCore
from gossipnode.core.auth import pow_bits, solve_pow
from gossipnode.core.modest import ModestCore
from gossipnode.runtime.events import EventHub
from gossipnode.learn.trainer import TrainingCancelled
from gossipnode.learn.aggregation import build_pipeline
from gossipnode.learn.attacks import canonical_attacks
from gossipnode.learn.compress import make_compressor
from gossipnode.learn.sanity import NON_FINITE, WORSE_MODEL, AdoptionGate, check_model, non_finite
from gossipnode.learn.learner import Learner, Model, to_state
from gossipnode.runtime.store import ModelStore
from gossipnode.transport.base import INBOUND_SOURCE, Refused, Transport, TransportError
from gossipnode.transport.http import BUSY, HttpTransport, Runner
from gossipnode.wire.codec import decode, encode_frame
from gossipnode.wire.replay import ReplayGuard, SeqCounter
from gossipnode.wire.errors import WireError
from gossipnode.wire.identity import Identity, node_id
from gossipnode.wire.records import Ed25519RecordAuth
from gossipnode.wire.tensors import ENCODED_DTYPES, apply_delta, from_raw, make_delta, model_hash, to_raw

log = logging.getLogger("gossipnode.node")
BIG = 4 << 20  # models above this many bytes are hashed/encoded in a worker thread
MAX_ROUNDS_KEPT = 1000
# Frames waiting for the base of their delta (SPEC §15.1): at most this many, and at most the
# frame size limit in tensor bytes; beyond that they are refused `busy` (HTTP 503, retried).
PENDING_BASE_FRAMES = 16
# MODEL_REQUEST per peer: a token bucket of this many per --ping-timeout, burst BURST.
MODEL_REQUESTS_PER_PING = 2
MODEL_REQUEST_BURST = 4
MAX_BUCKETS = 4096
LOGGED_EVENTS = ("stalled", "restart", "peers_unreachable", "partition_healing", "merge",
                 "round_from_partition")


def _nbytes(model: Model) -> int:
    return sum(len(t.data) for t in model)


class Node:
    def __init__(self, cfg: NodeConfig, learner: Learner | None = None,
                 extra_transports: list[Transport] | None = None, serve_http: bool = True,
                 app: web.Application | None = None, path_prefix: str = "", serve_rest: bool = True,
                 sock: Any = None) -> None:
        """`app`/`path_prefix`: several nodes (Sybil identities) can share one HTTP server; the
        one that owns the server is the one created without `app`. `sock`: an already listening
        socket to serve on instead of binding cfg.host:cfg.port (the CLI binds before loading torch)."""
        self.cfg = cfg
        self._sock = sock
        self._failing: dict[str, int] = {}   # address -> sends that failed since the last success
        self.events = EventHub()
        self.state_dir = Path(cfg.state_dir)
        self.identity = Identity.load_or_create(self.state_dir / "identity.key")
        self.pk = self.identity.public_key
        self.id = node_id(self.pk)
        self._owns_learner = learner is None
        self.learner = learner or Learner.create(cfg, init_seed=self._init_seed(cfg))
        self.store = ModelStore()
        self.compressor = make_compressor(cfg.compress)   # None: float32 deltas (error feedback inside)
        self.pipeline = build_pipeline(cfg.filter, cfg.combine, cfg.correct, self_id=self.id,
                                       **cfg.pipeline_params())
        self.history_rng = np.random.default_rng(int.from_bytes(self.pk[8:16], "big"))
        self.history_bytes_sent = 0
        self.last_aggregation: dict[str, Any] | None = None
        self._pk_of: dict[str, bytes] = {self.id: self.pk}
        self.serve_http = serve_http and app is None
        self.serve_rest = serve_rest
        self.app = app if app is not None else web.Application()
        self.transports: list[Transport] = []
        self.http: HttpTransport | None = None
        if serve_http:
            self.http = HttpTransport(
                self.app, cfg.address + path_prefix, self.max_size, timeout=cfg.http_timeout,
                path_prefix=path_prefix, budget=int(cfg.inbound_budget_mb * (1 << 20)) or self.max_size,
                min_rate=cfg.http_min_rate_mb * (1 << 20), local_host=cfg.host,
                answer_timeout=min(cfg.http_timeout, max(1.0, cfg.ping_timeout)))
            self.http.on_reject = self._count_reject
            # --transport mqtt: REST is still served over HTTP, but peers are not told to use it
            if "http" in {t.strip() for t in cfg.transport.split(",")}:
                self.transports.append(self.http)
        if extra_transports is None:   # HTTP is built above: it also serves REST
            from gossipnode.transport import TransportOptions, build_transports
            extra_transports = build_transports(cfg.transport, TransportOptions(
                self.id, cfg.network_id, self.max_size, broker=cfg.broker, mqtt_username=cfg.mqtt_username,
                mqtt_password=cfg.mqtt_password, mqtt_ca=cfg.mqtt_ca), skip=("http",))
        self.transports += extra_transports
        # ---- transport-level discovery (MQTT announces / last wills; issue 5) ----
        self._discovered_early: list[tuple[tuple[str, ...], bytes]] | None = []
        for t in self.transports:
            bind = getattr(t, "bind", None)
            if bind is not None:
                bind(self.identity, self.addresses, self._on_peer_discovered, self._on_peer_gone,
                     self._count_reject)
        self.seq = SeqCounter()
        self.replay = ReplayGuard()
        self.rejected: Counter[str] = Counter()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.sent_by_type: Counter[str] = Counter()   # message_kind -> messages sent
        self.messages_received = 0
        self.send_failures = 0
        self.rounds: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.rounds_trained = 0
        self.rounds_aggregated = 0
        self.last_eval: dict[str, Any] | None = None
        self.model_round = 0
        self.current: bytes = b""
        self._fetches: dict[bytes, asyncio.Future] = {}
        self._pending_frames = 0   # frames waiting for a base (bounded: PENDING_BASE_FRAMES)
        self._pending_bytes = 0    # their tensor bytes (bounded: max_size)
        self._request_tokens: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._probe_losses: OrderedDict[bytes, float] = OrderedDict()   # model -> adoption-check loss
        self.adoption = AdoptionGate(cfg.adopt_margin)
        self.adopted: deque[bytes] = deque(maxlen=8)   # recent round models adopted (trusted bases)
        self._tasks: set[asyncio.Task] = set()
        self._evals: set[asyncio.Task] = set()
        self._train_cancel: threading.Event | None = None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopping = False
        self.stop_error: str | None = None   # why the last stop was not clean (final checkpoint)
        self.checkpoints_written = 0
        self.checkpoint_failures = 0
        self.last_checkpoint_error: str | None = None
        self._checkpoint_lock = threading.Lock()
        self._runner: web.AppRunner | None = None
        self._started_at = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.record_auth = Ed25519RecordAuth(self.identity, cfg.network_id)
        self._join_buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()   # source -> (tokens, t)
        self.core = self._make_core()

    # ---- set-up ----------------------------------------------------------------------------
    def _init_seed(self, cfg: NodeConfig) -> int | None:
        # --independent-init: a random start of this node's own (derived from its key, so stable).
        return int.from_bytes(self.pk[:4], "big") if cfg.independent_init else None

    @property
    def max_size(self) -> int:
        return int(self.cfg.max_message_mb * (1 << 20))

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for t in self.transports for a in t.addresses)

    def _make_core(self) -> ModestCore:
        initial = self.learner.initial
        index = 1
        resumed = checkpoint.load(self.state_dir)
        if resumed is not None:
            model, meta = resumed
            if self.learner.compatible(model) is None:
                initial = model
                index = int(meta.get("index", 0)) + 1
                self.rounds_trained = int(meta.get("rounds_trained", 0))
                self.rounds_aggregated = int(meta.get("rounds_aggregated", 0))
                self.model_round = int(meta.get("round", 0))
                log.info("resumed from checkpoint: round %d, model %s", self.model_round, meta.get("model"))
            else:
                log.warning("ignoring checkpoint: %s", self.learner.compatible(model))
        h = self.store.put(initial)
        self.store.pin(h)
        self.current = h
        self.initial_hash = h
        rng = random.Random(int.from_bytes(self.pk[:8], "big"))
        if self.cfg.protocol == "gossip":
            gcfg = GossipConfig(interval=self.cfg.gossip_interval, max_rounds=self.cfg.rounds or None,
                                failure_backoff=max(10.0, 3 * self.cfg.gossip_interval))
            return GossipPeerCore(gcfg, self.pk, self.addresses, h, rng, index=index, auth=self.record_auth,
                                  max_peers=self.cfg.max_peers, pow_nonce=self._join_pow())
        # probe nonces must be unpredictable (a joiner proves its address by echoing one)
        return ModestCore(self.cfg.modest(), self.pk, self.addresses, h, rng, index=index,
                          auth=self.record_auth, secret_rng=random.SystemRandom(), pow_nonce=self._join_pow())

    def _join_pow(self) -> int:
        """--join-pow BITS: find this key's proof-of-work nonce once (about 2^BITS hashes), cached."""
        bits = self.cfg.join_pow
        if bits <= 0:
            return 0
        path = self.state_dir / "join_pow.json"
        try:
            cached = json.loads(path.read_text())
            if cached.get("public_key") == self.pk.hex() and pow_bits(self.pk, int(cached["nonce"])) >= bits:
                return int(cached["nonce"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        t0 = time.monotonic()
        nonce = solve_pow(self.pk, bits)
        log.info("join proof-of-work: %d bits in %.2f s", bits, time.monotonic() - t0)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"public_key": self.pk.hex(), "bits": bits, "nonce": nonce}))
        except OSError as e:
            log.warning("cannot cache the join proof-of-work: %s", e)
        return nonce

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.serve_rest:
            from gossipnode.api.app import setup_routes  # the API imports node types; import late
            setup_routes(self.app, self)
        for t in self.transports:
            await t.start(self._on_frame)
        if self.serve_http:
            self._runner = Runner(self.app, self.http, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = (web.SockSite(self._runner, self._sock, ssl_context=self._ssl_context()) if self._sock is not None
                    else web.TCPSite(self._runner, self.cfg.host, self.cfg.port, ssl_context=self._ssl_context()))
            await site.start()
        self._spawn(self._evaluate(self.current, self.model_round, "start"))
        self._spawn(self._timer_loop())
        log.info("node %s listening on %s (network %s, device %s)", self.id, ", ".join(self.addresses),
                 self.cfg.network_id, self.learner.device)
        self._execute(self.core.start(self._now(), list(self.cfg.peers)))
        early, self._discovered_early = self._discovered_early or [], None
        for addresses, pk in early:
            self._on_peer_discovered(addresses, pk)

    def _ssl_context(self):
        """--tls-cert/--tls-key: the REST and HTTP-transport port speaks TLS (issue 13)."""
        if not self.cfg.tls_cert:
            return None
        import ssl
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cfg.tls_cert, self.cfg.tls_key)
        return ctx

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self, graceful: bool = True, reason: str = "stopped",
                   timeout: float | None = None) -> None:
        """Leave (LEAVE adverts, pending evaluations, final checkpoint and status), then close.

        Never raises before the stopped event is set. `timeout` bounds the whole stop (SIGTERM
        passes one); without it the graceful part waits as long as it usually takes (the
        evaluations of the last round, for the final status). A final checkpoint that cannot be
        written is logged, counted and kept in `stop_error` (the CLI then exits non-zero)."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout

        def left(default: float, reserve: float = 0.0) -> float:
            return default if end is None else max(0.05, min(default, end - loop.time() - reserve))

        # Shares of `timeout` kept for the steps after each one (3.5 s: 2.0, 1.5, 1.0, 0.8, 0.6, 0.3).
        def reserve(share: float) -> float:
            return 0.0 if timeout is None else share * timeout
        t0 = loop.time()
        try:
            log.info("node %s leaving: %s", self.id, reason)
            if self._train_cancel is not None:
                self._train_cancel.set()
            if graceful and self._loop is not None:
                try:
                    failed0 = self.send_failures
                    sends = self._execute(self.core.leave(self._now()))
                    if sends:
                        await asyncio.wait(sends, timeout=left(5.0, reserve(0.57)))
                    done = sum(t.done() for t in sends) - (self.send_failures - failed0)
                    log.info("stop: LEAVE advert delivered to %d of %d peers", max(0, done), len(sends))
                    if self._evals:
                        await asyncio.wait(self._evals, timeout=left(30.0, reserve(0.43)))
                        if any(not t.done() for t in self._evals):
                            log.info("stop: not waiting for the last round's evaluation")
                    ok = await asyncio.wait_for(asyncio.to_thread(self._checkpoint), left(1e9, reserve(0.29)))
                    if ok:
                        log.info("stop: checkpoint of round %d written to %s", self.model_round, self.state_dir)
                    else:
                        self.stop_error = f"could not write the final checkpoint to {self.state_dir}: " \
                                          f"{self.last_checkpoint_error}"
                except TimeoutError:
                    self.stop_error = f"the final checkpoint to {self.state_dir} did not finish in time"
                    log.error("%s", self.stop_error)
                except Exception as e:  # never let a failing leave keep the process alive
                    self.stop_error = f"leaving failed: {type(e).__name__}: {e}"
                    log.exception("leaving failed")
            try:
                await asyncio.wait_for(asyncio.to_thread(self._write_status), left(5.0, reserve(0.23)))
            except TimeoutError:
                log.warning("writing status.json did not finish in time")
            others = [t for t in self._tasks if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            if others:
                await asyncio.wait(others, timeout=left(10.0, reserve(0.17)))
            log.debug("stop: tasks done")
            for tr in self.transports:
                try:
                    await asyncio.wait_for(tr.stop(), left(10.0, reserve(0.086)))
                except Exception as e:
                    log.warning("closing transport %s: %s", type(tr).__name__, e or type(e).__name__)
            if self._owns_learner:
                self.learner.executor.shutdown(wait=False, cancel_futures=True)
            if self._runner is not None:
                try:
                    await asyncio.wait_for(self._runner.cleanup(), left(5.0))
                except Exception as e:
                    log.warning("closing the HTTP server: %s", e or type(e).__name__)
            log.info("stop: node %s stopped in %.2f s (status.json written, connections closed)",
                     self.id, loop.time() - t0)
        except Exception as e:
            self.stop_error = self.stop_error or f"stopping failed: {type(e).__name__}: {e}"
            log.exception("stopping failed")
        finally:
            self._stopped.set()
            self.events.close()

    async def _torch(self, fn, *args):
        """Run PyTorch work on the learner's one worker thread: torch is only ever called from
        that OS thread, never from several pool threads, and the event loop never blocks."""
        return await asyncio.get_running_loop().run_in_executor(self.learner.executor, partial(fn, *args))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed: %r", task.exception(), exc_info=task.exception())

    # ---- the core's actions ----------------------------------------------------------------
    def _execute(self, actions: list) -> list[asyncio.Task]:
        sends = []
        for a in actions:
            if isinstance(a, act.Send):
                sends.append(self._spawn(self._send(a.peer, a.msg)))
            elif isinstance(a, act.SendTo):
                sends.append(self._spawn(self._send_to(a.address, a.msg)))
            elif isinstance(a, act.StartTraining):
                self._start_training(a.round, a.model)
            elif isinstance(a, act.CancelTraining):
                if self._train_cancel is not None:
                    self._train_cancel.set()
            elif isinstance(a, act.Aggregate):
                self._spawn(self._aggregate(a))
            elif isinstance(a, act.Merge):
                self._spawn(self._merge(a))
            elif isinstance(a, act.NewModel):
                self._adopt(a)
            elif isinstance(a, act.Finished):
                if not self._stopping:
                    self._spawn(self.stop(graceful=True, reason=a.reason))
            elif isinstance(a, act.Event):
                self._record(a)
        self._wake.set()
        return sends

    async def _timer_loop(self) -> None:
        while True:
            d = self.core.next_deadline()
            timeout = None if d is None else max(0.0, d - self._now())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            d = self.core.next_deadline()
            if d is not None and d <= self._now() and not self._stopping:
                self._execute(self.core.tick(self._now()))

    def _record(self, e: act.Event) -> None:
        if e.kind == "rejected":   # the core's rejections (SPEC 15): counted, logged once, no state
            reason = str(e.detail.get("reason", "rejected"))
            n = int(e.detail.get("count", 1))
            self._count_reject(reason, str(e.detail))
            self.rejected[reason] += n - 1
            return
        r = self._round(e.round)
        r["events"].append({"t": round(time.time(), 3), "kind": e.kind} | e.detail)
        del r["events"][:-50]
        self.events.emit({"round": e.round, "kind": e.kind} | e.detail)
        role = {"training": "trainer", "aggregating": "aggregator"}.get(e.kind)
        if role and role not in r["roles"]:
            r["roles"].append(role)
        # Stall checks, restarts and partitions (peers out of reach: one line per change of the
        # count, not per ping) are rare and worth seeing in the log; the rest is routine.
        log.log(logging.INFO if e.kind in LOGGED_EVENTS else logging.DEBUG,
                "round %d %s %s", e.round, e.kind, e.detail)

    def _round(self, k: int) -> dict[str, Any]:
        r = self.rounds.get(k)
        if r is None:
            r = {"round": k, "roles": [], "participants": [], "accuracy": None, "loss": None,
                 "started_at": round(time.time(), 3), "duration_s": None, "events": []}
            self.rounds[k] = r
            while len(self.rounds) > MAX_ROUNDS_KEPT:
                self.rounds.popitem(last=False)
        return r

    # ---- transport-level discovery (issue 5) -------------------------------------------------
    def _on_peer_discovered(self, addresses: tuple[str, ...], pk: bytes) -> None:
        """A transport saw a peer's announce: advertise a JOIN to it over an address we can reach."""
        if self._discovered_early is not None:  # before core.start(): replayed right after it
            self._discovered_early.append((addresses, pk))
            return
        usable = tuple(a for a in addresses if self._transport_for(a) is not None)
        discovered = getattr(self.core, "discovered", None)  # a core without it ignores discovery
        if usable and discovered is not None and not self._stopping and pk != self.pk:
            self._execute(discovered(self._now(), pk, usable))

    def _on_peer_gone(self, pk: bytes) -> None:
        """A transport saw a peer's last will: the peer is departed until it joins again."""
        departed = getattr(self.core, "departed", None)
        if departed is not None and not self._stopping and self._loop is not None:
            self._execute(departed(self._now(), pk))

    # ---- sending ---------------------------------------------------------------------------
    def _address(self, pk: bytes) -> str | None:
        """The peer's address from its own signed record (view or pending join), nothing else:
        no transport hint (e.g. the old HTTP reply-to header) is ever a destination."""
        schemes = {sc for t in self.transports for sc in getattr(t, "schemes", (t.scheme,))}
        for a in self.core.address_of(pk):
            if a.split("://", 1)[0] in schemes:
                return a
        return None

    def _transport_for(self, address: str) -> Transport | None:
        scheme = address.split("://", 1)[0]
        return next((t for t in self.transports if scheme in getattr(t, "schemes", (t.scheme,))), None)

    def _attach_tensors(self, msg: ModelMsg) -> ModelMsg | None:
        if msg.kind == ModelKind.TRAINED:
            d = self.store.delta_of(msg.model)
            if d is not None:
                return replace(msg, base=d[0], tensors=d[1])
        model = self.store.get(msg.model)
        return None if model is None else replace(msg, base=None, tensors=model)

    async def _send(self, pk: bytes, msg) -> None:
        addr = self._address(pk)
        if addr is None:
            self.send_failures += 1
            key = f"peer {node_id(pk)}"
            first = key not in self._failing
            if self._failing.get(key) or len(self._failing) < MAX_BUCKETS:
                self._failing[key] = self._failing.get(key, 0) + 1
            log.log(logging.INFO if first else logging.DEBUG, "no address for peer %s; dropping %s%s",
                    node_id(pk), type(msg).__name__, " (repeats at debug level)" if first else "")
            return
        if isinstance(msg, ModelMsg) and not msg.tensors:
            full = self._attach_tensors(msg)
            if full is None:
                log.warning("model %s no longer held; cannot send", msg.model.hex()[:16])
                return
            msg = replace(full, histories=self._select_histories(pk))
        if self._failing:
            self._failing.pop(f"peer {node_id(pk)}", None)
        await self._send_to(addr, msg, pk)

    async def _send_to(self, address: str, msg, peer: bytes | None = None) -> None:
        t = self._transport_for(address)
        if t is None:
            self.send_failures += 1
            log.info("no transport for %s", address)
            return
        size = sum(len(x.data) for x in getattr(msg, "tensors", ()))
        args = (self.identity, self.cfg.network_id, self.seq.next(), time.time(), msg)
        # scatter-gather parts: tensor buffers are referenced, the frame is never joined for HTTP
        frame = await asyncio.to_thread(encode_frame, *args) if size > BIG else encode_frame(*args)
        try:
            await t.send(address, frame)
        except TransportError as e:
            self.send_failures += 1
            # The first failure to an address is logged at INFO, repeats at DEBUG until it works.
            n = self._failing.get(address, 0)
            if n or len(self._failing) < MAX_BUCKETS:   # bounded: beyond it, repeats stay at INFO
                self._failing[address] = n + 1
            if n == 0 and not isinstance(msg, Ping | Pong):   # peers out of reach: the core's event
                log.info("send %s to %s failed: %s (repeats are logged at debug level until it works)",
                         type(msg).__name__, address, e)
            else:
                log.debug("send %s to %s failed: %s", type(msg).__name__, address, e)
            # MoDeST: only an HTTP request that got no answer says the peer is out of reach (a
            # refusal is an answer; an MQTT failure is the broker link, not the peer).
            peer_gone = not isinstance(self.core, ModestCore) or (t is self.http and not isinstance(e, Refused))
            if peer is not None and hasattr(self.core, "peer_failed") and peer_gone:
                self._execute(self.core.peer_failed(self._now(), peer))
            return
        self.bytes_sent += len(frame)
        self.messages_sent += 1
        self.sent_by_type[message_kind(msg)] += 1
        if self._failing and (n := self._failing.pop(address, 0)):
            log.info("sending to %s works again (after %d failures)", address, n)
        if isinstance(msg, ModelMsg):
            self.history_bytes_sent += sum(len(t.data) for h in msg.histories for t in h.tensors)

    # ---- receiving -------------------------------------------------------------------------
    def _count_reject(self, reason: str, detail: str = "") -> str:
        self.rejected[reason] += 1
        if self.rejected[reason] == 1 or log.isEnabledFor(logging.DEBUG):
            log.warning("rejected a message: %s %s", reason, detail)
        return reason

    async def _on_frame(self, frame: bytes, reply_to: str | None) -> str | None:
        """The one inbound handler for every transport. Returns a rejection reason or None.
        `reply_to` (a transport's unauthenticated hint) is ignored: replies go only to the
        address in the sender's own signed record."""
        if self._stopping:
            return "stopping"
        try:
            if len(frame) > BIG:
                env = await asyncio.to_thread(decode, frame, self.cfg.network_id, self.max_size, self.replay)
            else:
                env = decode(frame, self.cfg.network_id, self.max_size, self.replay)
        except WireError as e:
            return self._count_reject(e.reason, str(e))
        self.bytes_received += len(frame)
        self.messages_received += 1
        sender, msg = env.sender, env.msg
        self._pk_of.setdefault(node_id(sender), sender)
        if sender == self.pk:
            return self._count_reject("own_message")
        if isinstance(msg, ModelRequest):
            return self._on_model_request(sender, msg)
        if isinstance(msg, ModelData):
            return self._on_model_data(msg)
        if isinstance(msg, ModelMsg):
            if msg.base is not None and msg.base not in self.store:
                if (why := self._not_admissible(sender, msg)) is not None:
                    return why   # no base fetch for a stranger's model
                return self._hold_for_base(sender, msg)  # must fetch the base first
            return await self._receive_model(sender, msg)
        if (isinstance(msg, Advertise) and msg.status == Status.JOIN and sender not in self.core.view
                and not self._join_allowed(INBOUND_SOURCE.get())):
            return self._count_reject("join_rate_limited", f"source {INBOUND_SOURCE.get()}")
        acts = self.core.handle(self._now(), sender, msg)
        self._execute(acts)
        return next((str(a.detail.get("reason")) for a in acts
                     if isinstance(a, act.Event) and a.kind == "rejected"), None)

    def _join_allowed(self, source: str | None) -> bool:
        """Token bucket per network source for JOIN adverts of non-members (the per-key limit is
        the core's): `join_rate` per second, bursts of twice that (a local cluster joining at once)."""
        if source is None or self.cfg.join_rate <= 0:
            return True
        now = self._now()
        burst = 2 * self.cfg.join_rate
        tokens, t = self._join_buckets.pop(source, (burst, now))
        tokens = min(burst, tokens + (now - t) * self.cfg.join_rate)
        ok = tokens >= 1
        self._join_buckets[source] = (tokens - 1 if ok else tokens, now)
        while len(self._join_buckets) > 4096:
            self._join_buckets.popitem(last=False)
        return ok

    def _on_model_request(self, sender: bytes, msg: ModelRequest) -> str | None:
        """Answered (MODEL_DATA) only to a member, at the address of its own signed record,
        and at most MODEL_REQUESTS_PER_PING per --ping-timeout (burst MODEL_REQUEST_BURST)."""
        if sender not in self.core.view or self._address(sender) is None:
            return self._count_reject("not_member", "model request")
        if not self._take_token(sender):
            return self._count_reject("rate_limited", "model request")
        model = self.store.get(msg.model)
        self._spawn(self._send(sender, ModelData(msg.model, model or ())))
        return None

    def _take_token(self, pk: bytes) -> bool:
        now = self._now()
        rate = MODEL_REQUESTS_PER_PING / max(self.cfg.ping_timeout, 1e-3)
        tokens, t = self._request_tokens.pop(pk, (float(MODEL_REQUEST_BURST), now))
        tokens = min(float(MODEL_REQUEST_BURST), tokens + (now - t) * rate)
        ok = tokens >= 1.0
        self._request_tokens[pk] = (tokens - 1.0 if ok else tokens, now)
        while len(self._request_tokens) > MAX_BUCKETS:
            self._request_tokens.popitem(last=False)
        return ok

    def _hold_for_base(self, sender: bytes, msg: ModelMsg) -> str | None:
        """A delta whose base we lack waits (bounded in count and bytes) while we fetch it."""
        size = _nbytes(msg.tensors)
        if self._pending_frames >= PENDING_BASE_FRAMES or self._pending_bytes + size > self.max_size:
            return self._count_reject(BUSY, f"{self._pending_frames} frames wait for a base")
        self._pending_frames += 1
        self._pending_bytes += size

        def release(_: asyncio.Task) -> None:
            self._pending_frames -= 1
            self._pending_bytes -= size

        self._spawn(self._receive_model(sender, msg)).add_done_callback(release)
        return None

    def _on_model_data(self, msg: ModelData) -> str | None:
        fut = self._fetches.get(msg.model)
        if fut is None or fut.done():
            return self._count_reject("unsolicited_model")
        if not msg.tensors:
            fut.set_result(None)
            return None
        if model_hash(msg.tensors) != msg.model:
            return self._count_reject("hash_mismatch", "model data")
        if (why := self.learner.compatible(msg.tensors)) is not None:
            return self._count_reject("incompatible_model", why)
        if (bad := non_finite(to_state(msg.tensors))) is not None:
            return self._count_reject(NON_FINITE, f"model data: tensor {bad!r}")
        fut.set_result(msg.tensors)
        return None

    def _fetch_timeout(self, size: int) -> float:
        """How long a frame waits for its base: two ping time-outs plus the base's transfer at
        the minimum rate (the base is a whole model of our architecture: at least as big as our
        own, and as the delta; a compressed delta is much smaller than its base)."""
        size = max(size, _nbytes(self.learner.initial))
        return 2 * self.cfg.ping_timeout + size / (self.cfg.http_min_rate_mb * (1 << 20))

    async def _fetch(self, pk: bytes, h: bytes, size: int = 0) -> Model | None:
        fut = self._fetches.get(h)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._fetches[h] = fut
            self._spawn(self._send(pk, ModelRequest(h)))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=self._fetch_timeout(size))
        except TimeoutError:
            if not fut.done():
                fut.set_result(None)
            return None
        finally:
            if self._fetches.get(h) is fut and fut.done():
                self._fetches.pop(h, None)

    def _not_admissible(self, sender: bytes, msg: ModelMsg) -> str | None:
        """The core's walk-free role checks (not_member, round_out_of_range). On a rejection the
        core records (counts) it and may answer it (gossip mode: its advert, so the sender can join)."""
        why = self.core.admissible(sender, msg)
        if why is not None:
            self._execute(self.core.handle(self._now(), sender, replace(msg, tensors=(), histories=())))
        return why

    async def _receive_model(self, sender: bytes, msg: ModelMsg) -> str | None:
        size = sum(len(t.data) for t in msg.tensors)
        base: Model | None = None
        if msg.base is None:
            model = msg.tensors
        else:
            base = self.store.get(msg.base) or await self._fetch(sender, msg.base, size)
            if base is None:
                return self._count_reject("missing_base", msg.base.hex()[:16])
            self.store.put(base, msg.base)
            try:
                model = apply_delta(base, msg.tensors)
            except ValueError as e:
                return self._count_reject(getattr(e, "reason", "bad_delta"), str(e))  # bad_encoding
        if (why := self.learner.compatible(model)) is not None:
            return self._count_reject("incompatible_model", why)
        h = await asyncio.to_thread(model_hash, model) if size > BIG else model_hash(model)
        if h != msg.model:
            return self._count_reject("hash_mismatch", "model")
        # Sanity before the model is stored or the core sees it: finite, and an update of bounded
        # size against its base (a delta) or else against our current model (SPEC section 15).
        reference = base if base is not None else self.store.get(self.current)
        bad = (await asyncio.to_thread(self._model_problem, model, reference) if size > BIG
               else self._model_problem(model, reference))
        if bad is not None:
            return self._count_reject(*bad)
        if (why := self._not_admissible(sender, msg)) is not None:
            return why   # valid bytes, but no authority: nothing of it is stored
        # A lineage merge after a partition (SPEC 15.5) is exempt: the other part's model is worse
        # on our data by construction (each part trained apart), and it is merged, not adopted.
        merging = getattr(self.core, "would_merge", lambda *_: False)(sender, msg.round, msg.model)
        if msg.kind == ModelKind.AGGREGATED and not merging and (
                why := await self._worse_than_current(model)):
            reason = self._count_reject(WORSE_MODEL, why)   # a (member) aggregator's garbage
            if self.current and self.cfg.accept_quorum == 1 and msg.round <= self.core.round + 1:
                # The round goes on from the model we hold (SPEC section 15): a malicious
                # aggregator wastes its round, it cannot stop honest trainers.
                self._execute(self.core.handle(self._now(), sender, replace(
                    msg, model=self.current, tensors=(), histories=())))
            return reason
        if msg.histories and (why := self._merge_histories(sender, msg.histories)) is not None:
            return self._count_reject("bad_history", why)
        self.store.put(model, h, parent=msg.base, delta=msg.tensors if msg.base else None)
        if msg.kind == ModelKind.TRAINED:
            self._round(msg.round)["participants"].append(node_id(sender))
        self._execute(self.core.handle(self._now(), sender, replace(msg, tensors=(), histories=())))
        return None

    async def _worse_than_current(self, model: Model) -> str | None:
        """The adoption check (SPEC section 15): a round model from another node must not be
        much worse on our own data than the model we hold. Role checks say who may send a round
        model; this says the model is fit to replace ours, whoever sent it."""
        probe = getattr(self.learner, "probe_loss", None)
        cur = self.store.get(self.current) if self.current else None
        if self.adoption.cap <= 0 or probe is None or cur is None:
            return None
        if (cur_loss := self._probe_losses.get(self.current)) is None:
            cur_loss = await asyncio.to_thread(probe, cur)
            self._probe_losses[self.current] = cur_loss
            while len(self._probe_losses) > 4:
                self._probe_losses.popitem(last=False)
        return self.adoption.check(await asyncio.to_thread(probe, model), cur_loss)

    def _model_problem(self, model: Model, reference: Model | None) -> tuple[str, str] | None:
        ref = to_state(reference) if reference is not None else None
        return check_model(to_state(model), ref, self.cfg.max_update_norm)

    # ---- SybilWall history gossip (piggy-backed on model messages) ---------------------------
    def _history_store(self):
        f = self.pipeline.filter
        return getattr(f, "store", None) if getattr(f, "use_gossip", False) else None

    def _select_histories(self, pk: bytes) -> tuple[HistoryRecord, ...]:
        store = self._history_store()
        if store is None or self.cfg.history_records < 1 or len(store) == 0:
            return ()
        picked: dict[str, Any] = {}
        for _ in range(self.cfg.history_records):
            for j, rec in store.select_records([node_id(pk)], self.id, self.history_rng).values():
                if j in self._pk_of:
                    picked[j] = rec
        dt = np.float16 if self.cfg.history_dtype == "f2" else np.float32
        lim = float(np.finfo(dt).max)
        return tuple(
            HistoryRecord(self._pk_of[j], rec.round, rec.distance,
                          (to_raw("history", np.clip(rec.history, -lim, lim).astype(dt)),))
            for j, rec in picked.items())

    def _merge_histories(self, sender: bytes, records: tuple[HistoryRecord, ...]) -> str | None:
        """Validate and store gossiped histories; a reason string if any is unusable (nothing stored)."""
        store = self._history_store()
        if store is None:
            return None
        vecs = []
        for r in records:
            if len(r.tensors) != 1 or r.distance < 1 or r.tensors[0].dtype in ENCODED_DTYPES:
                return "a history record must hold one array tensor and distance >= 1"
            v = from_raw(r.tensors[0])
            if v.ndim != 1 or v.size != self.learner.history_size or v.dtype.kind != "f":
                return f"history of shape {v.shape}, expected ({self.learner.history_size},)"
            v = v.astype(np.float32)
            if not np.isfinite(v).all():
                return "history has non-finite values"
            vecs.append(v)
        src = node_id(sender)
        for r, v in zip(records, vecs, strict=True):
            pid = node_id(r.peer)
            self._pk_of.setdefault(pid, r.peer)
            store.merge_record(pid, r.round, r.distance, v, src)
        return None

    # ---- training, aggregation, evaluation -------------------------------------------------
    def _start_training(self, k: int, h: bytes) -> None:
        if self._train_cancel is not None:
            self._train_cancel.set()
        if self._stopping:   # a stopping node trains nothing new (it would hold the exit)
            return
        ev = threading.Event()
        self._train_cancel = ev
        self._spawn(self._train(k, h, ev))

    async def _train(self, k: int, h: bytes, cancel: threading.Event) -> None:
        base = self.store.get(h)
        if base is None:
            self._execute(self.core.training_failed(self._now(), k, "base model not held"))
            return
        self.store.pin(h)
        t0 = self._now()
        try:
            trained, stats = await self._torch(self.learner.train, base, cancel)
            delta, h2 = await asyncio.to_thread(make_delta, trained, base, self.compressor)
            model = await asyncio.to_thread(apply_delta, base, delta)
        except TrainingCancelled:
            return
        except Exception as e:  # a training failure must not take the node down
            log.exception("training round %d failed", k)
            self._execute(self.core.training_failed(self._now(), k, f"{type(e).__name__}: {e}"))
            return
        finally:
            self.store.unpin(h)
        self.store.put(model, h2, parent=h, delta=delta)
        self.rounds_trained += 1
        r = self._round(k)
        r["train"] = {"loss": round(stats.loss, 5), "samples": stats.samples, "seconds": round(self._now() - t0, 3)}
        if not self._stopping:
            self._execute(self.core.training_done(self._now(), k, h2))

    async def _aggregate(self, a: act.Aggregate) -> None:
        from gossipnode.runtime.aggregating import run_pipeline
        models = [(pk, self.store.get(h), h) for pk, h in a.contributions]
        held = [(pk, m, h) for pk, m, h in models if m is not None]
        if not held:
            log.warning("round %d: no contribution still held", a.round)
            return
        t0 = self._now()
        result, info = await asyncio.to_thread(run_pipeline, self, a.round, held)
        if "fallback" in info:
            log.warning("round %d: the aggregate failed the self-check (%s); sent the %s result instead",
                        a.round, info["self_check"], info["fallback"])
        h = self.store.put(result)
        self.rounds_aggregated += 1
        r = self._round(a.round)
        r["aggregation"] = info | {"seconds": round(self._now() - t0, 3)}
        self.last_aggregation = {"round": a.round} | r["aggregation"]
        if "aggregator" not in r["roles"]:
            r["roles"].append("aggregator")
        if not self._stopping:
            self._execute(self.core.aggregation_done(self._now(), a.round, h))

    async def _merge(self, a: act.Merge) -> None:
        """Merge received models into our own through the same pipeline: gossip learning, and a
        MoDeST lineage merge after a partition (`a.beta` set)."""
        from gossipnode.runtime.aggregating import run_merge
        own = self.store.get(a.own) or self.store.get(self.current)
        held = [(pk, m, h) for pk, h in a.contributions if (m := self.store.get(h)) is not None]
        if own is None or not held:   # nothing to merge: go on with the received model (MoDeST)
            keep = a.contributions[0][1] if a.beta is not None and held else a.own
            self._execute(self.core.merge_done(self._now(), a.round, keep))
            return
        t0 = self._now()
        result, info = await asyncio.to_thread(run_merge, self, a.round, own, held, a.beta)
        h = self.store.put(result)
        r = self._round(a.round)
        if a.beta is not None:   # MoDeST: a lineage merge after a partition (SPEC 15.5)
            r["merge"] = info | {"seconds": round(self._now() - t0, 3)}
            log.info("round %d: merged our lineage (weight %.3f) into the model from %s",
                     a.round, a.beta, node_id(a.contributions[0][0]))
            if not self._stopping:
                self._execute(self.core.merge_done(self._now(), a.round, h))
            return
        r["aggregation"] = info | {"seconds": round(self._now() - t0, 3)}
        self.last_aggregation = {"round": a.round} | r["aggregation"]
        self.rounds_aggregated += 1
        if not self._stopping:
            self._execute(self.core.merge_done(self._now(), a.round, h))

    def _adopt(self, a: act.NewModel) -> None:
        if a.round < self.model_round and self.current != self.initial_hash:
            return
        if self.current:
            self.store.unpin(self.current)
        self.store.pin(a.model)
        self.current = a.model
        self.adopted.append(a.model)
        self.model_round = a.round
        self._round(a.round)
        prev = self.rounds.get(a.round - 1)
        if prev is not None and prev["duration_s"] is None:
            prev["duration_s"] = round(time.time() - prev["started_at"], 3)
        t = self._spawn(self._evaluate(a.model, a.round, a.role))
        self._evals.add(t)
        t.add_done_callback(self._evals.discard)

    async def _evaluate(self, h: bytes, k: int, role: str) -> None:
        model = self.store.get(h)
        if model is None:
            return
        # Both in a worker thread: the trainer's lock may be held by a training run.
        res, extra = await self._torch(lambda: (self.learner.evaluate(model), self._extra_eval(model)))
        ev = {"round": k, "accuracy": round(res.accuracy, 5), "loss": round(res.loss, 5),
              "samples": res.samples, "model_hash": h.hex()} | extra
        if self.last_eval is None or k >= self.last_eval["round"]:
            self.last_eval = ev
        r = self._round(k)
        r["accuracy"], r["loss"] = ev["accuracy"], ev["loss"]
        if "attack_rate" in ev:
            r["attack_rate"] = ev["attack_rate"]
        log.info("round %d (%s): accuracy %.4f loss %.4f", k, role, res.accuracy, res.loss)
        self.events.emit({"kind": "evaluated", "role": role} | ev)
        if role != "start":
            await asyncio.to_thread(self._checkpoint)

    def _write_status(self) -> None:
        """The final status, for whoever looks after the process is gone (`gossipnode cluster`)."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_dir / "status.json.tmp"
            tmp.write_text(jsonout.dumps(self.status() | {"finished": True}))
            tmp.replace(self.state_dir / "status.json")
        except OSError as e:
            log.warning("cannot write status.json: %s", e)

    def _extra_eval(self, model: Model) -> dict[str, Any]:
        """Attack rates only where an attack is configured: this process's own (an attacker host)
        and the ones named by --eval-attack (honest nodes of a network with an attacker)."""
        names = tuple(dict.fromkeys(((self.cfg.attack,) if self.cfg.attack else ())
                                    + canonical_attacks(self.cfg.eval_attack)))
        rates = self.learner.attack_rates(model, names)
        return {"attack_rate": rates} if rates else {}

    def _checkpoint(self) -> bool:
        """Save the current model; False (counted, logged, shown in the status) when it fails."""
        with self._checkpoint_lock:  # evaluations may finish together; saves must not interleave
            model = self.store.get(self.current)
            if model is None:
                return True
            try:
                checkpoint.save(self.state_dir, model, {
                    "round": self.model_round, "model": self.current.hex(), "index": self.core.index,
                    "rounds_trained": self.rounds_trained, "rounds_aggregated": self.rounds_aggregated,
                    "node_id": self.id, "network_id": self.cfg.network_id,
                })
            except Exception as e:
                self.checkpoint_failures += 1
                err = f"{type(e).__name__}: {e}"
                if err != self.last_checkpoint_error:
                    log.error("cannot write a checkpoint to %s: %s", self.state_dir, err)
                self.last_checkpoint_error = err
                return False
            if self.last_checkpoint_error is not None:
                log.info("checkpoints are written again")
            self.last_checkpoint_error = None
            self.checkpoints_written += 1
            return True

    # ---- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        c = self.core
        return {
            "node_id": self.id,
            "public_key": self.pk.hex(),
            "network_id": self.cfg.network_id,
            "address": self.cfg.address,
            "addresses": list(self.addresses),
            "round": c.round,
            "model_round": self.model_round,
            "role": c.role(),
            "peers_known": len(c.view) - 1,
            "peers_active": len(c.active(c.round)) - 1,
            "peers_unreachable": len(getattr(c, "unreachable", ())),   # out of reach (SPEC 15.5)
            "model_hash": self.current.hex(),
            "rounds_trained": self.rounds_trained,
            "rounds_aggregated": self.rounds_aggregated,
            "last_eval": self.last_eval,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "messages_sent": self.messages_sent,
            "messages_sent_by_type": dict(self.sent_by_type),
            "messages_received": self.messages_received,
            "send_failures": self.send_failures,
            "messages_rejected": dict(self.rejected),
            # the adoption check's margin now and the recent honest loss rises it follows
            "adoption": {"margin": round(self.adoption.margin, 5),
                         "recent_rises": [round(r, 4) for r in self.adoption.rises]},
            "uptime_s": round(time.time() - self._started_at, 3),
            "device": self.learner.device,
            "version": __version__,
            "protocol": self.cfg.protocol,
            "pipeline": self.pipeline.describe(),
            "last_aggregation": self.last_aggregation,
            "history_bytes_sent": self.history_bytes_sent,
            "sample_size": self.cfg.sample_size,
            "finished": self._stopping,
            "checkpoints_written": self.checkpoints_written,
            "checkpoint_failures": self.checkpoint_failures,
            "last_checkpoint_error": self.last_checkpoint_error,
        } | ({"http": self.http.status() | {"pending_base_frames": self._pending_frames,
                                            "pending_base_bytes": self._pending_bytes}}
             if self.http is not None else {})

    def peers(self) -> list[dict[str, Any]]:
        c = self.core
        active = set(c.active(c.round))
        out = []
        for pk, e in c.view.entries.items():
            if pk == self.pk:
                continue
            out.append({"node_id": node_id(pk), "public_key": pk.hex(), "addresses": list(e.addresses),
                        "last_active_round": e.last_active, "index": e.index, "status": e.status.name.lower(),
                        "active": pk in active})
        return out
