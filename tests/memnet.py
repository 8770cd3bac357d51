"""In-process N-node harness: real `Node`s in one event loop over the memory transport.

Each node is the daemon's own runtime (core, wire, learner, store, pipeline) with its own state
directory, but no HTTP server and no REST API: frames travel through a `MemoryHub` and reach
the same inbound handler every transport calls. A tiny synthetic data set and a logistic
regression keep a round well under a second.

    async with MemNet(tmp_path, 6, sample_size=3) as net:
        await net.until(lambda: all(n.core.round >= 5 for n in net.nodes), 30, "5 rounds")

`Puppet` is a peer that is not a node: a real identity that signs whatever frames a test builds
(forged models, unsolicited data) and sends them through the hub; it answers PING with PONG
and MODEL_REQUEST from its own `models`, so it can join a node the way a real peer does.

This is the only test module that imports `Node` (the runtime may move; fix the import here).
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from conftest import until

from gossipnode.runtime.config import NodeConfig
from gossipnode.core.messages import (
    Advertise, ModelData, ModelRequest, Ping, Pong, RawTensor, Status, ViewRecord,
)
from gossipnode.runtime.node import Node
from gossipnode.transport.memory import MemoryHub
from gossipnode.wire.codec import decode, encode_frame
from gossipnode.wire.errors import WireError
from gossipnode.wire.identity import Identity
from gossipnode.wire.records import Ed25519RecordAuth
from gossipnode.wire.replay import SeqCounter

__all__ = ["FAST", "MemNet", "Node", "Puppet", "write_blobs"]

Model = tuple[RawTensor, ...]

# Timings for a network of a few nodes in one process: a round takes a few hundred ms.
FAST: dict[str, Any] = dict(
    model="logreg", lr=0.1, momentum=0.9, batch_size=20, local_epochs=1,
    bootstrap_wait=0.3, bootstrap_timeout=5.0, ping_timeout=0.5, aggregation_timeout=1.5,
    round_timeout=5.0, inactivity_threshold=8, max_message_mb=1.0,
)


def write_blobs(folder: Path, n: int, *, classes: int = 4, features: int = 16, train_per_node: int = 160,
                test: int = 400, seed: int = 0, classes_per_node: int | None = None,
                separation: float = 1.0) -> list[Path]:
    """One .npz per node (load_npz format): Gaussian blobs, one per class, well apart, so a
    linear model separates them. `classes_per_node`: node i holds only classes i, i+1, ...
    (mod classes) of the training data, so no node can learn every class alone; every node
    has the same test split of all classes."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, (classes, features)).astype(np.float32) * separation

    def draw(y: np.ndarray) -> np.ndarray:
        return (centers[y] + rng.normal(0.0, 1.0, (len(y), features))).astype(np.float32)

    y_test = np.arange(test) % classes
    x_test = draw(y_test)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        own = (np.arange(classes) if classes_per_node is None
               else (i + np.arange(classes_per_node)) % classes)
        y = own[np.arange(train_per_node) % len(own)]
        p = folder / f"node_{i}.npz"
        np.savez(p, x=draw(y), y=y, x_test=x_test, y_test=y_test, num_classes=np.array(classes))
        paths.append(p)
    return paths


class MemNet:
    """N real nodes `n0`..`n{N-1}` at mem://n0..; each bootstraps from all the others.

    `cfg` overrides FAST and the NodeConfig defaults for every node; `add(**cfg)` builds one
    more node (started by `start()` or, after it, by `start_node`)."""

    def __init__(self, tmp_path: Path, n: int = 0, *, network_id: str = "memnet",
                 classes: int = 4, classes_per_node: int | None = None, seed: int = 0,
                 separation: float = 1.0, **cfg: Any) -> None:
        self.dir = Path(tmp_path)
        self.hub = MemoryHub()
        self.network_id = network_id
        self.cfg = FAST | cfg
        self.nodes: list[Node] = []
        self.evaluations: list[list[dict[str, Any]]] = []   # per node: its `evaluated` events
        self._n = n
        self._classes = classes
        self._classes_per_node = classes_per_node
        self._seed = seed
        self._separation = separation
        self._data: list[Path] = []
        self._started: set[int] = set()
        for _ in range(n):
            self.add()

    # ---- building ---------------------------------------------------------------------------
    def name(self, i: int) -> str:
        return f"n{i}"

    def address(self, i: int) -> str:
        return f"mem://{self.name(i)}"

    def config(self, i: int, **over: Any) -> NodeConfig:
        size = max(self._n, i + 1)
        if len(self._data) < size:
            self._data = write_blobs(self.dir / "data", size, classes=self._classes,
                                     classes_per_node=self._classes_per_node, separation=self._separation,
                                     seed=self._seed)
        peers = tuple(self.address(j) for j in range(size) if j != i)
        base = dict(state_dir=str(self.dir / self.name(i)), network_id=self.network_id,
                    data=str(self._data[i]), advertise=self.address(i), peers=peers)
        return NodeConfig(**(base | self.cfg | over))

    def add(self, **over: Any) -> Node:
        i = len(self.nodes)
        node = Node(self.config(i, **over), extra_transports=[self.hub.transport(self.name(i))],
                    serve_http=False, serve_rest=False)
        evals: list[dict[str, Any]] = []
        node.events.subscribe(lambda e: evals.append(e) if e["kind"] == "evaluated" else None)
        self.nodes.append(node)
        self.evaluations.append(evals)
        return node

    def puppet(self, name: str = "puppet") -> Puppet:
        return Puppet(self.hub, name, self.network_id)

    # ---- running ----------------------------------------------------------------------------
    async def start(self) -> MemNet:
        for i in range(len(self.nodes)):
            await self.start_node(i)
        return self

    async def start_node(self, i: int) -> Node:
        if i not in self._started:
            await self.nodes[i].start()
            self._started.add(i)
        return self.nodes[i]

    async def stop_node(self, i: int, graceful: bool = False) -> None:
        """Stop one node (the others go on); graceful: it sends its LEAVE adverts first."""
        if i in self._started:
            self._started.discard(i)
            await self.nodes[i].stop(graceful=graceful)

    async def crash(self, i: int) -> None:
        """As a SIGKILL: unreachable at once (frames to and from it fail), no LEAVE, then stopped."""
        self.hub.down.add(self.address(i))
        await self.stop_node(i)

    async def stop(self) -> None:
        """Cut every address first, so no frame is handled by a node that is stopping, then stop
        the nodes (not gracefully: nothing to say to peers that stop too)."""
        self.hub.down.update(self.hub.handlers)
        await self.hub.close()
        for i in sorted(self._started):
            await self.stop_node(i)

    async def __aenter__(self) -> MemNet:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def until(self, pred: Callable[[], bool], timeout: float = 30.0, what: str = "the condition",
                    every: float = 0.02) -> float:
        """conftest.until, with every node's state in the failure message."""
        try:
            return await until(pred, timeout, what, every)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.summary()}") from None

    def summary(self) -> str:
        lines = []
        for i, n in enumerate(self.nodes):
            s = n.status()
            acc = (s["last_eval"] or {}).get("accuracy")
            lines.append(f"{self.name(i)}: round {s['round']} role {s['role']} peers {s['peers_known']} "
                         f"trained {s['rounds_trained']} aggregated {s['rounds_aggregated']} "
                         f"accuracy {acc} rejected {s['messages_rejected']} send_failures {s['send_failures']}")
        return "\n".join(lines)

    # ---- reading ----------------------------------------------------------------------------
    def accuracies(self) -> list[float | None]:
        """Each node's last evaluation of a round model (round >= 1), None before one."""
        out: list[float | None] = []
        for n in self.nodes:
            ev = n.status()["last_eval"]
            out.append(ev["accuracy"] if ev and ev["round"] >= 1 else None)
        return out

    def best_accuracies(self) -> list[float]:
        """Each node's best evaluation of a round model so far (0.0 before one)."""
        return [max((e["accuracy"] for e in evals if e["round"] >= 1), default=0.0) for evals in self.evaluations]

    def train_alone(self, i: int, epochs: int) -> tuple[float, float]:
        """Node i's learner trained on its own shard only, `epochs` times from the initial model
        (no network; blocking): test accuracy (before, after). A control for learning tests."""
        learner = self.nodes[i].learner
        model = learner.initial
        for _ in range(epochs):
            model, _ = learner.train(model, threading.Event())
        return learner.evaluate(learner.initial).accuracy, learner.evaluate(model).accuracy

    def all_know_each_other(self) -> bool:
        return all(n.status()["peers_known"] == len(self.nodes) - 1 for n in self.nodes)


class Puppet:
    """A peer driven by the test: its own identity and signed record at mem://NAME.

    Frames it receives are decoded into `received` (messages, in order). It answers PING with
    PONG (carrying its record, as a joiner must) and MODEL_REQUEST with MODEL_DATA from `models`
    (empty tensors, "not held", for a hash it lacks) unless `serve_models` is False."""

    def __init__(self, hub: MemoryHub, name: str, network_id: str) -> None:
        self.hub = hub
        self.network_id = network_id
        self.address = f"mem://{name}"
        self.identity = Identity.generate()
        self.pk = self.identity.public_key
        self.auth = Ed25519RecordAuth(self.identity, network_id)
        self.record = self.auth.sign(ViewRecord(self.pk, 0, 1, Status.JOIN, (self.address,)))
        self.seq = SeqCounter()
        self.models: dict[bytes, Model] = {}
        self.serve_models = True
        self.received: list[Any] = []
        self.answers: list[str | None] = []   # the node's verdicts on this puppet's replies
        self._tasks: set[asyncio.Task] = set()
        hub.handlers[self.address] = self._on_frame

    def frame(self, msg: Any, *, network_id: str | None = None, seq: int | None = None,
              ts: float | None = None) -> bytes:
        """A frame signed with this puppet's key (fields overridable, to forge bad ones)."""
        return bytes(encode_frame(self.identity, network_id or self.network_id,
                                  self.seq.next() if seq is None else seq,
                                  time.time() if ts is None else ts, msg))

    async def send(self, node: Node, msg: Any) -> str | None:
        """Send one message to the node's inbound handler; its rejection reason or None."""
        return await self.deliver(node, self.frame(msg))

    async def deliver(self, node: Node, frame: bytes) -> str | None:
        return await self.hub.deliver(node.status()["addresses"][0], frame, self.address)

    async def join(self, node: Node, timeout: float = 5.0) -> None:
        """JOIN advert; the node probes this address (answered by `_on_frame`) and counts us a
        member once we answered (in a running network its view takes us after its next model
        send). The record claims round 0: once the network is past round tau (inactivity
        threshold) the puppet is a member that is never sampled, so it stalls no round."""
        reason = await self.send(node, Advertise.of(self.record))
        assert reason is None, reason
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not node.core.is_member(self.pk):
            assert loop.time() < end, f"puppet not a member after {timeout} s"
            await asyncio.sleep(0.01)

    async def leave(self, nodes: list[Node]) -> None:
        """A signed LEAVE advert (index + 1) to each node; PINGs are answered with it from now on."""
        r = self.record
        self.record = self.auth.sign(ViewRecord(self.pk, r.last_active, r.index + 1, Status.LEAVE, r.addresses))
        for node in nodes:
            reason = await self.send(node, Advertise.of(self.record))
            assert reason is None, reason

    def of_type(self, cls: type) -> list[Any]:
        return [m for m in self.received if isinstance(m, cls)]

    async def _on_frame(self, frame: bytes, sender: str | None) -> str | None:
        try:
            env = decode(frame, self.network_id, 1 << 30)
        except WireError as e:
            return e.reason
        msg = env.msg
        self.received.append(msg)
        reply: Any = None
        if isinstance(msg, Ping):
            reply = Pong(msg.round, msg.nonce, self.record)
        elif isinstance(msg, ModelRequest) and self.serve_models:
            reply = ModelData(msg.model, self.models.get(msg.model, ()))
        if reply is not None and sender is not None:
            # answered from a task of its own: the node's send returns first, as over HTTP
            t = asyncio.ensure_future(self._reply(sender, reply))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        return None

    async def _reply(self, to: str, msg: Any) -> None:
        try:
            self.answers.append(await self.hub.deliver(to, self.frame(msg), self.address))
        except Exception as e:   # the node went away: recorded, not raised into a task
            self.answers.append(f"{type(e).__name__}: {e}")

