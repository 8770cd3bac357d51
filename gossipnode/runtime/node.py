"""The node: lifecycle (start, stop) and dispatch. Inbound frames from every transport go to the core
through the shared `core.driver.ActionDriver`; the node is the driver's Host and hands the work to its
services (outbox, model exchange, histories, learning worker, telemetry), which never call back."""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from gossipnode import __version__
from gossipnode.core import actions as act
from gossipnode.core.driver import ActionDriver
from gossipnode.core.messages import ModelMsg
from gossipnode.core.modest import ModestCore
from gossipnode.learn.aggregation import build_pipeline
from gossipnode.learn.compress import make_compressor
from gossipnode.learn.sanity import WORSE_MODEL
from gossipnode.learn.trainer import TrainingCancelled
from gossipnode.transport import TransportOptions, build_transports
from gossipnode.transport.base import Transport
from gossipnode.transport.http import HttpTransport, Runner
from gossipnode.wire.identity import Identity, node_id
from gossipnode.wire.records import Ed25519RecordAuth
from gossipnode.wire.replay import ReplayGuard

from .boot import JoinLimiter, http_transport, join_pow, make_core, resume, ssl_context
from .config import NodeConfig
from .exchange import ModelExchange
from .histories import HistoryGossip
from .inbound import Inbound
from .outbox import FAILED, SENT, UNREACHABLE, Outbox
from .stopping import stop_node
from .store import ModelStore
from .telemetry import Telemetry
from .trainproc import Learner, make_learner
from .worker import LearningWorker, attack_names

log = logging.getLogger("gossipnode.node")


class Node(Inbound):
    def __init__(self, cfg: NodeConfig, learner: Learner | None = None,
                 extra_transports: list[Transport] | None = None, serve_http: bool = True,
                 app: web.Application | None = None, path_prefix: str = "", serve_rest: bool = True,
                 sock: Any = None) -> None:
        """`app`/`path_prefix`: several nodes (Sybil identities) can share one HTTP server; the
        one that owns the server is the one created without `app`. `sock`: an already listening
        socket to serve on instead of binding cfg.host:cfg.port (the CLI binds before loading torch)."""
        self.cfg = cfg
        self._sock = sock
        self.state_dir = Path(cfg.state_dir)
        self.identity = Identity.load_or_create(self.state_dir / "identity.key")
        self.pk = self.identity.public_key
        self.id = node_id(self.pk)
        self.telemetry = Telemetry(cfg.api_token)
        self.events = self.telemetry.events
        self._owns_learner = learner is None
        init_seed = int.from_bytes(self.pk[:4], "big") if cfg.independent_init else None
        self.learner = learner or make_learner(cfg, init_seed)   # --train-process
        self.store = ModelStore()
        self.pipeline = build_pipeline(cfg.filter, cfg.combine, cfg.correct, self_id=self.id,
                                       **cfg.pipeline_params())
        self.worker = LearningWorker(self.learner, self.store, self.pipeline, make_compressor(cfg.compress),
                                     cfg.adopt_margin, cfg.beta, attack_names(cfg.attack, cfg.eval_attack),
                                     self.state_dir)
        self.histories = HistoryGossip(self.pipeline, self.id, cfg.history_records, cfg.history_dtype,
                                       self.learner.history_size, int.from_bytes(self.pk[8:16], "big"),
                                       is_member=lambda pk: self.core.is_member(pk))
        self.histories.heard(self.pk)
        self.exchange = ModelExchange(self.store, self.learner, self.max_size, cfg.ping_timeout,
                                      cfg.http_min_rate_mb * (1 << 20), cfg.max_update_norm)
        self.serve_http = serve_http and app is None
        self.serve_rest = serve_rest
        self.app = app if app is not None else web.Application()
        self.transports: list[Transport] = []
        self.http: HttpTransport | None = None
        if serve_http:   # built here, not from the registry: it also serves REST
            self.http = http_transport(cfg, self.app, path_prefix, self.max_size)
            self.http.on_reject = self._count_reject
            # --transport mqtt: REST is still served over HTTP, but peers are not told to use it
            if "http" in {t.strip() for t in cfg.transport.split(",")}:
                self.transports.append(self.http)
        if extra_transports is None:
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
        self.replay = ReplayGuard()
        self.model_round = 0
        self.current: bytes = b""
        self._tasks: set[asyncio.Task] = set()
        self._evals: set[asyncio.Task] = set()
        self._train_cancel: threading.Event | None = None
        self._wake = asyncio.Event()
        self._sleep_until = math.inf
        self._stopped = asyncio.Event()
        self._stopping = False
        self.stop_error: str | None = None   # why the last stop was not clean (final checkpoint)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.record_auth = Ed25519RecordAuth(self.identity, cfg.network_id)
        self.joins = JoinLimiter(cfg.join_rate)
        self.core = self._make_core()
        self.outbox = Outbox(self.identity, cfg.network_id, self.transports, self.telemetry, self.core.address_of)
        self.driver = ActionDriver(self.core, self, self._now)
        t = self.telemetry
        t.parts = [self._status, t.counters, self.worker.status, self._status_tail, t.looplag.status]
        t.peers, t.model, t.current = self.peers, self.store.get, lambda: self.current

    # ---- set-up ----------------------------------------------------------------------------
    @property
    def max_size(self) -> int:
        return int(self.cfg.max_message_mb * (1 << 20))

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for t in self.transports for a in t.addresses)

    @property
    def rejected(self):
        return self.telemetry.rejected

    @property
    def rounds(self):
        return self.telemetry.rounds

    def _make_core(self):
        initial, index = self.learner.initial, 1
        resumed = resume(self.state_dir, self.learner)
        if resumed is not None:
            initial, meta = resumed
            index = int(meta.get("index", 0)) + 1
            self.telemetry.rounds_trained = int(meta.get("rounds_trained", 0))
            self.telemetry.rounds_aggregated = int(meta.get("rounds_aggregated", 0))
            self.model_round = int(meta.get("round", 0))
        h = self.store.put(initial)
        self.store.pin(h)
        self.current = self.initial_hash = h
        return make_core(self.cfg, self.pk, self.addresses, h, index, self.record_auth,
                         join_pow(self.state_dir, self.pk, self.cfg.join_pow))

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.serve_rest:
            from gossipnode.api.app import setup_routes  # REST reads the telemetry only
            setup_routes(self.app, self.telemetry)
        for t in self.transports:
            await t.start(self._on_frame)
        if self.serve_http:
            self._runner = Runner(self.app, self.http, access_log=None, handle_signals=False)
            await self._runner.setup()
            tls = ssl_context(self.cfg.tls_cert, self.cfg.tls_key)
            site = (web.SockSite(self._runner, self._sock, ssl_context=tls) if self._sock is not None
                    else web.TCPSite(self._runner, self.cfg.host, self.cfg.port, ssl_context=tls))
            await site.start()
        self._spawn(self._evaluate(self.current, self.model_round, "start"))
        self._spawn(self._timer_loop())
        self._spawn(self.telemetry.looplag.run())   # the event loop's lag, `event_loop` in the status
        log.info("node %s listening on %s (network %s, device %s)", self.id, ", ".join(self.addresses),
                 self.cfg.network_id, self.learner.device)
        self.driver.start(list(self.cfg.peers))
        early, self._discovered_early = self._discovered_early or [], None
        for addresses, pk in early:
            self._on_peer_discovered(addresses, pk)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def stop(self, graceful: bool = True, reason: str = "stopped", timeout: float | None = None) -> None:
        """Leave (LEAVE adverts, pending evaluations, final checkpoint and status), then close.
        Never raises before the stopped event is set (runtime/stopping.py)."""
        await stop_node(self, graceful, reason, timeout)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed: %r", task.exception(), exc_info=task.exception())

    async def _timer_loop(self) -> None:
        while True:
            d = self.core.next_deadline()
            self._sleep_until = math.inf if d is None else d
            timeout = None if d is None else max(0.0, d - self._now())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._stopping:
                self.driver.tick()

    # ---- the driver's Host: how the core's actions are carried out ---------------------------
    def send(self, peer: bytes, msg) -> asyncio.Task:
        return self._spawn(self._send(peer, msg))

    def send_to(self, address: str, msg) -> asyncio.Task:
        return self._spawn(self.outbox.send_to(address, msg))

    def start_training(self, round_: int, model: bytes) -> None:
        if self._train_cancel is not None:
            self._train_cancel.set()
        if self._stopping:   # a stopping node trains nothing new (it would hold the exit)
            return
        self._train_cancel = ev = threading.Event()
        self._spawn(self._train(round_, model, ev))

    def cancel_training(self, round_: int) -> None:
        if self._train_cancel is not None:
            self._train_cancel.set()

    def aggregate(self, a: act.Aggregate) -> None:
        self._spawn(self._aggregate(a))

    def merge(self, a: act.Merge) -> None:
        self._spawn(self._merge(a))

    def new_model(self, a: act.NewModel) -> None:
        if a.round < self.model_round and self.current != self.initial_hash:
            return
        if self.current:
            self.store.unpin(self.current)
        self.store.pin(a.model)
        self.current = a.model
        self.worker.adopted.append(a.model)
        self.model_round = a.round
        self.telemetry.adopted(a.round)
        if self._stopping:   # the learner's thread may be gone; the final checkpoint saves it
            return
        t = self._spawn(self._evaluate(a.model, a.round, a.role))
        self._evals.add(t)
        t.add_done_callback(self._evals.discard)

    def finished(self, reason: str) -> None:
        if not self._stopping:
            self._spawn(self.stop(graceful=True, reason=reason))

    def event(self, e: act.Event) -> None:
        self.telemetry.record(e)

    def wake_at(self, t: float) -> None:
        if t < self._sleep_until:
            self._wake.set()

    # ---- transport-level discovery (issue 5) -------------------------------------------------
    def _on_peer_discovered(self, addresses: tuple[str, ...], pk: bytes) -> None:
        """A transport saw a peer's announce: advertise a JOIN to it over an address we can reach."""
        if self._discovered_early is not None:  # before start(): replayed right after it
            self._discovered_early.append((addresses, pk))
            return
        usable = tuple(a for a in addresses if self.outbox.transport_for(a) is not None)
        if usable and not self._stopping and pk != self.pk:
            self.driver.discovered(pk, usable)

    def _on_peer_gone(self, pk: bytes) -> None:
        """A transport saw a peer's last will: the peer is departed until it joins again."""
        if not self._stopping and self._loop is not None:
            self.driver.departed(pk)

    # ---- sending ---------------------------------------------------------------------------
    async def _send(self, pk: bytes, msg) -> None:
        addr = self.outbox.address(pk)
        if addr is None:
            self.outbox.no_address(pk, type(msg).__name__)
            return
        if isinstance(msg, ModelMsg) and not msg.tensors:
            full = self.exchange.attach_tensors(msg)
            if full is None:
                log.warning("model %s no longer held; cannot send", msg.model.hex()[:16])
                return
            msg = self.histories.attach(full, pk)
        self.outbox.reached(pk)
        outcome = await self.outbox.send_to(addr, msg)
        if outcome == SENT and isinstance(msg, ModelMsg):
            self.histories.bytes_sent += self.histories.bytes_of(msg)
        # MoDeST: only a direct send (HTTP, memory) that got no answer says the peer is out of reach.
        elif outcome == UNREACHABLE or (outcome == FAILED and not isinstance(self.core, ModestCore)):
            self.driver.peer_failed(pk)

    # ---- training, aggregation, evaluation -------------------------------------------------
    async def _train(self, k: int, h: bytes, cancel: threading.Event) -> None:
        t0 = self._now()
        try:
            h2, stats = await self.worker.train(h, cancel)
        except TrainingCancelled:
            return
        except Exception as e:  # a training failure must not take the node down
            if not isinstance(e, LookupError):
                log.exception("training round %d failed", k)
            self.driver.training_failed(k, str(e) if isinstance(e, LookupError) else f"{type(e).__name__}: {e}")
            return
        self.telemetry.rounds_trained += 1
        self.telemetry.round(k)["train"] = {"loss": round(stats.loss, 5), "samples": stats.samples,
                                            "seconds": round(self._now() - t0, 3)}
        if not self._stopping:
            self.driver.training_done(k, h2)

    async def _aggregate(self, a: act.Aggregate) -> None:
        t0 = self._now()
        done = await self.worker.aggregate(a, self.current)
        if done is None:
            log.warning("round %d: no contribution still held", a.round)
            return
        h, info = done
        if "fallback" in info:
            log.warning("round %d: the aggregate failed the self-check (%s); sent the %s result instead",
                        a.round, info.get("self_check", "every update unfit"), info["fallback"])
        self.telemetry.aggregated(a.round, info | {"seconds": round(self._now() - t0, 3)})
        if not self._stopping:
            self.driver.aggregation_done(a.round, h)

    async def _merge(self, a: act.Merge) -> None:
        """Gossip learning's merge, and a MoDeST lineage merge after a partition (`a.beta` set)."""
        t0 = self._now()
        done = await self.worker.merge(a, self.current)
        if isinstance(done, bytes):   # nothing to merge
            self.driver.merge_done(a.round, done)
            return
        h, info = done[0], done[1] | {"seconds": round(self._now() - t0, 3)}
        if a.beta is None:
            self.telemetry.aggregated(a.round, info, role=False)
        else:   # MoDeST: a lineage merge after a partition (SPEC 15.5)
            self.telemetry.round(a.round)["merge"] = info
            other = node_id(a.contributions[0][0])
            if "refused" in info:   # the merge would leave us worse: go on from our own model
                self._count_reject(WORSE_MODEL, f"lineage merge with {other}: {info['refused']}")
                h = a.own if self.store.get(a.own) is not None else self.current
            else:
                log.info("round %d: merged our lineage (weight %.3f) into the model from %s", a.round, a.beta, other)
        if not self._stopping:
            self.driver.merge_done(a.round, h)

    async def _evaluate(self, h: bytes, k: int, role: str) -> None:
        ev = await self.worker.evaluate(h, k)
        if ev is None:
            return
        self.telemetry.evaluated(ev, role)
        if role != "start":
            await asyncio.to_thread(self._checkpoint)

    def _checkpoint(self) -> bool:
        t = self.telemetry
        return self.worker.checkpoint(self.current, {
            "round": self.model_round, "index": self.core.index, "rounds_trained": t.rounds_trained,
            "rounds_aggregated": t.rounds_aggregated, "node_id": self.id, "network_id": self.cfg.network_id})

    # ---- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self.telemetry.status()

    def _status(self) -> dict[str, Any]:
        c = self.core
        return {
            "node_id": self.id, "public_key": self.pk.hex(), "network_id": self.cfg.network_id,
            "address": self.cfg.address, "addresses": list(self.addresses),
            "round": c.round, "model_round": self.model_round, "role": c.role(),
            "peers_known": len(c.view) - 1, "peers_active": len(c.active(c.round)) - 1,
            "peers_unreachable": len(c.unreachable),   # out of reach (SPEC 15.5)
            "model_hash": self.current.hex(),
        }

    def _status_tail(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.telemetry.started_at, 3),
            "device": self.learner.device, "version": __version__, "protocol": self.cfg.protocol,
            "pipeline": self.pipeline.describe(), "last_aggregation": self.telemetry.last_aggregation,
            "history_bytes_sent": self.histories.bytes_sent, "sample_size": self.cfg.sample_size,
            "history_entries_skipped": self.histories.entries_skipped, "finished": self._stopping,
        } | self.worker.checkpoint_status() | (
            {"http": self.http.status() | self.exchange.status()} if self.http is not None else {})

    def peers(self) -> list[dict[str, Any]]:
        c = self.core
        active = set(c.active(c.round))
        return [{"node_id": node_id(pk), "public_key": pk.hex(), "addresses": list(e.addresses),
                 "last_active_round": e.last_active, "index": e.index, "status": e.status.name.lower(),
                 "active": pk in active}
                for pk, e in c.view.entries.items() if pk != self.pk]
