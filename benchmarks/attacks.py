"""Every attack of issue 9 against a live cluster of real node processes, one table row each.

    nice -n 10 python benchmarks/attacks.py            # full run (the table in docs/SECURITY.md)
    python benchmarks/attacks.py --quick               # a subset with smaller sizes (CI)

A cluster of 3 honest `gossipnode start` processes plus one *member* (a real node run inside this
process, whose key this script holds: it joined like anyone, takes part honestly, and lends its
key and sequence counter to the crafted frames) learns MNIST-1D on 127.0.0.1. After warm-up every
attack is sent over real HTTP, signed by fresh keys ("fresh") and/or by the member ("member").
For each attack the table shows: frames tried, frames accepted (HTTP 202), the rejection reasons
the honest nodes counted (deltas of /v1/status `messages_rejected`), whether any honest node's
model, round, view or process was changed, resource figures, and the rate of honest work
(trainings + aggregations per second) during the attack relative to before it.

Exit status: 0 when no attack changed honest state, 1 otherwise. An attack that changed the
cluster is followed by a fresh cluster, so one successful attack does not spoil the next row.

Crafting follows the wire as it is: messages are the current `gossipnode.core.messages`
dataclasses built by field name (fields this script does not know get attacker-chosen values),
frames come from `gossipnode.wire.codec.encode`; a field that must be signed by its owner (a
membership record signature) is signed with the attacker's own key, as an attacker would.
Tensors or shapes the writer refuses are put in by patching the encoded body before sealing.
Every address named in a frame is on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import http.client
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402
import numpy as np  # noqa: E402

from gossipnode.core import messages as M  # noqa: E402
from gossipnode.wire import codec  # noqa: E402
from gossipnode.wire.identity import Identity  # noqa: E402
from gossipnode.wire.tensors import from_raw, model_hash, to_raw  # noqa: E402

INT63_MAX = (1 << 63) - 1
LOOPBACK = "127.0.0.1"
HOST_FLAGS = ["--mnist1d-samples", "4000", "--sample-size", "3", "--bootstrap-wait", "2",
              "--ping-timeout", "2", "--aggregation-timeout", "5", "--round-timeout", "8",
              "--inactivity-threshold", "4", "--log-level", "info"]
TAU = 4


def node_flags() -> set[str]:
    from gossipnode.runtime.flags import NODE_FLAGS
    return {f for f, *_ in NODE_FLAGS}


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((LOOPBACK, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def get_json(url: str, timeout: float = 3.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, (0, 0) if gone."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in out:
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out["VmRSS"], out["VmHWM"]


# ============================================================================== crafting

def build(cls: type, **values: Any) -> Any:
    """An instance of message dataclass `cls` from the values this script knows; a required
    field it does not know gets a plausible attacker value (0, (), zero bytes)."""
    args = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            args[f.name] = values[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            t = str(f.type)
            if "bytes" in t:
                args[f.name] = bytes(64 if "sig" in f.name else 32)
            elif "tuple" in t:
                args[f.name] = ()
            elif "str" in t:
                args[f.name] = ""
            elif "Status" in t:
                args[f.name] = M.Status.JOIN
            else:
                args[f.name] = 0
    return cls(**args)


_RECORD_DOMAIN = b"gossipnode/v2 record\x00"


def _contract_record_sig(signer: Identity, network_id: str, rec: Any) -> bytes:
    """The record signature of the shared contract (PLAN.md): Ed25519 over sha256(domain ||
    msgpack([network_id, peer, last_active, index, status, addresses]))."""
    body = msgpack.packb([network_id, rec.peer, rec.last_active, rec.index, int(rec.status),
                          list(rec.addresses)], use_bin_type=True)
    return signer.sign(hashlib.sha256(_RECORD_DOMAIN + body).digest())


def _project_signer(network_id: str) -> Callable[[Identity, Any], Any] | None:
    """The project's own record signing (wire/records.py), if it exists: whatever class there
    has sign(record) and verify(record) and is built from an identity and a network id."""
    try:
        from gossipnode.wire import records
    except ImportError:
        return None
    for _, obj in inspect.getmembers(records, inspect.isclass):
        if obj.__module__ != records.__name__ or not (hasattr(obj, "sign") and hasattr(obj, "verify")):
            continue

        def sign(ident: Identity, rec: Any, obj=obj) -> Any:
            for args in ((ident, network_id), (network_id, ident)):
                try:
                    return obj(*args).sign(rec)
                except TypeError:
                    continue
            for kw in ({"identity": ident, "network_id": network_id},):
                try:
                    return obj(**kw).sign(rec)
                except TypeError:
                    continue
            raise TypeError(f"cannot construct {obj.__name__}")
        return sign
    for name in ("sign_record", "sign"):
        fn = getattr(records, name, None)
        if callable(fn):
            return lambda ident, rec, fn=fn: fn(ident, network_id, rec)
    return None


def record(signer: Identity, network_id: str, peer: bytes, last_active: int, index: int,
           status: M.Status, addresses: tuple[str, ...]) -> Any:
    """A view record about `peer` signed by `signer` (valid only when signer owns `peer`)."""
    rec = build(M.ViewRecord, peer=peer, last_active=last_active, index=index, status=status,
                addresses=addresses)
    if "sig" not in {f.name for f in dataclasses.fields(M.ViewRecord)}:
        return rec  # wire version 1: records carry no signature
    if signer.public_key == peer:
        s = _project_signer(network_id)
        if s is not None:
            try:
                out = s(signer, rec)
                if out is not None:
                    return out
            except Exception:  # noqa: BLE001 - fall back to the contract's digest
                pass
    return dataclasses.replace(rec, sig=_contract_record_sig(signer, network_id, rec))


def advertise(signer: Identity, network_id: str, round_: int, index: int, status: M.Status,
              addresses: tuple[str, ...], last_active: int | None = None) -> Any:
    """The signer's own ADVERTISE, in whatever shape the current wire has."""
    names = {f.name: f for f in dataclasses.fields(M.Advertise)}
    la = round_ if last_active is None else last_active
    values: dict[str, Any] = {"round": round_, "index": index, "status": status, "addresses": addresses,
                              "last_active": la}
    for name, f in names.items():
        if "ViewRecord" in str(f.type) and name not in values:
            values[name] = record(signer, network_id, signer.public_key, la, index, status, addresses)
    if "pow" in names:
        values["pow"] = _pow(signer.public_key)
    adv = build(M.Advertise, **values)
    if "sig" in names:
        rec = record(signer, network_id, signer.public_key, la, index, status, addresses)
        adv = dataclasses.replace(adv, sig=getattr(rec, "sig", bytes(64)))
    return adv


def _pow(peer: bytes) -> int:
    """A join proof-of-work nonce for `peer` if the nodes ask for one (the attacker pays it)."""
    from gossipnode.runtime.config import NodeConfig
    bits = getattr(NodeConfig(), "join_pow", 0)
    if not bits:
        return 0
    from gossipnode.core.auth import solve_pow
    return solve_pow(peer, bits)


def patch_body(frame: bytes, identity: Identity, patches: list[tuple[bytes, bytes]]) -> bytes:
    """Re-seal `frame` with byte replacements in its body (for values the writer refuses)."""
    env = msgpack.unpackb(frame, raw=False)
    body = env[-2]   # the body is the field before the signature (index 6 in v2, 7 in v3)
    for old, new in patches:
        if old not in body:
            raise ValueError("patch target not found in the body")
        body = body.replace(old, new, 1)
    return codec.seal(identity, env[1], env[2], env[4], env[5], [body], version=env[0])


class Signer:
    """A key plus its sequence counter. The member's counter is the member node's own, so its
    frames and ours never collide in the receivers' replay windows."""

    def __init__(self, identity: Identity, network_id: str, next_seq: Callable[[], int] | None = None,
                 label: str = "fresh") -> None:
        self.identity = identity
        self.network_id = network_id
        self.label = label
        self._seq = next_seq or codec.SeqCounter().next
        self._lock = threading.Lock()

    @property
    def pk(self) -> bytes:
        return self.identity.public_key

    def frame(self, msg: Any, patches: list[tuple[bytes, bytes]] | None = None) -> bytes:
        with self._lock:
            seq = self._seq()
        f = codec.encode(self.identity, self.network_id, seq, time.time(), msg)
        return patch_body(f, self.identity, patches) if patches else f


def tensors_like(model: list[Any], fill: float | None = None, fn: Callable[[np.ndarray], np.ndarray] | None = None
                 ) -> tuple[Any, ...]:
    out = []
    for t in model:
        a = from_raw(t)
        if a.dtype.kind == "f":
            a = np.full(a.shape, fill, dtype=a.dtype) if fill is not None else fn(a.copy()) if fn else a
        out.append(to_raw(t.name, a))
    return tuple(out)


def model_msg(round_: int, kind: M.ModelKind, tensors: tuple[Any, ...], view: tuple = (),
              histories: tuple = ()) -> Any:
    return build(M.ModelMsg, round=round_, kind=kind, model=model_hash(tensors), view=view, base=None,
                 tensors=tensors, histories=histories)


def collapse(model: list[Any], shift: float = 8.0) -> tuple[Any, ...]:
    """A finite, small-norm poison: the output bias pushed towards class 0."""
    out = list(tensors_like(model))
    for i in range(len(out) - 1, -1, -1):
        a = from_raw(out[i])
        if a.dtype.kind == "f" and a.ndim == 1:
            b = a.copy()
            b[0] += shift
            out[i] = to_raw(out[i].name, b)
            break
    return tuple(out)


# ============================================================================== the cluster

class HonestProcess:
    def __init__(self, port: int, state: Path, args: list[str]) -> None:
        self.port = port
        self.url = f"http://{LOOPBACK}:{port}"
        self.state = state
        self.args = args
        self.log_path = state.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = os.environ | {"PYTHONUNBUFFERED": "1",
                            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gossipnode", "start", "--port", str(self.port), "--state-dir",
             str(self.state), *self.args], stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, Any] | None:
        try:
            return get_json(self.url + "/v1/status")
        except (OSError, ValueError):
            return None

    def final_status(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""


class MemberHost:
    """A real gossipnode Node run on an event loop in a thread of this process: an honest member
    whose key and sequence counter the attacks may borrow, and which can turn malicious when it
    aggregates (`poison_aggregation`)."""

    def __init__(self, port: int, state: Path, flags: dict[str, Any]) -> None:
        from gossipnode.runtime.config import load_config
        from gossipnode.runtime.node import Node

        # "" (honest), "replace" (send a poisoned model as the round's aggregate) or "drop"
        # (ignore every update: send the current model again, so the round makes no progress)
        self.poison_aggregation = ""
        self.poisoned: set[bytes] = set()
        host = self

        class MaliciousNode(Node):
            async def _aggregate(self, a):  # noqa: ANN001
                if not host.poison_aggregation:
                    return await super()._aggregate(a)
                model = self.store.get(self.current)
                if model is None:
                    return await super()._aggregate(a)
                if host.poison_aggregation == "drop":
                    h = self.current
                else:   # a blatant poison; subtler ones, up to --adopt-margin worse, remain (SECURITY.md)
                    h = self.store.put(collapse(model, 20.0))
                    host.poisoned.add(h)
                self.telemetry.rounds_aggregated += 1
                self.driver.aggregation_done(a.round, h)

        self.cfg = load_config(overrides={"port": port, "state_dir": str(state)} | flags)
        self.url = f"http://{LOOPBACK}:{port}"
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="member-node")
        self.node = MaliciousNode(self.cfg)
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.node.start())
        except BaseException as e:  # noqa: BLE001
            self._error = e
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise RuntimeError(f"member node did not start: {self._error!r}")

    def next_seq(self) -> int:
        return asyncio.run_coroutine_threadsafe(self._seq(), self.loop).result(5)

    async def _seq(self) -> int:
        return self.node.outbox.seq.next()

    def signer(self) -> Signer:
        return Signer(self.node.identity, self.cfg.network_id, self.next_seq, "member")

    def status(self) -> dict[str, Any] | None:
        try:
            return get_json(self.url + "/v1/status")
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if not self.loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self.node.stop(graceful=False), self.loop).result(20)
        except Exception:  # noqa: BLE001
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class Cluster:
    """n_honest node processes and one member node (in this process) on loopback."""

    def __init__(self, root: Path, n_honest: int = 3, extra: list[str] | None = None,
                 member: bool = True, tag: str = "c") -> None:
        self.root = root / tag
        if self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True)
        self.network_id = "gossipnode"
        self.extra = list(extra or [])
        flags = node_flags()
        self.window = TAU
        if "--round-window" in flags and "--round-window" not in self.extra:
            self.extra += ["--round-window", str(TAU)]
        n = n_honest + (1 if member else 0)
        ports = free_ports(n)
        urls = [f"http://{LOOPBACK}:{p}" for p in ports]
        common = HOST_FLAGS + self.extra
        self.honest: list[HonestProcess] = []
        for i in range(n_honest):
            # Honest nodes bootstrap from each other only: the member joins by advertising itself,
            # as any member would. (A bootstrap peer is trusted for the network's round: SECURITY.md.)
            peers = ",".join(u for j, u in enumerate(urls[:n_honest]) if j != i)
            self.honest.append(HonestProcess(ports[i], self.root / f"node-{i}", common + [
                "--peers", peers, "--shard", f"{i}/{n}"]))
        self.member: MemberHost | None = None
        if member:
            overrides = _flags_to_overrides(common)
            overrides |= {"peers": ",".join(urls[:n_honest]), "shard": f"{n_honest}/{n}", "log_level": "warning"}
            self.member = MemberHost(ports[-1], self.root / "member", overrides)

    @property
    def nodes(self) -> list[Any]:
        return [*self.honest, *([self.member] if self.member else [])]

    def start(self) -> None:
        for h in self.honest:
            h.start()
        if self.member is not None:
            self.member.start()

    def stop(self) -> None:
        if self.member is not None:
            self.member.stop()
        for h in self.honest:
            h.stop()

    def statuses(self) -> list[dict[str, Any] | None]:
        with ThreadPoolExecutor(len(self.honest)) as ex:
            return list(ex.map(lambda h: h.status(), self.honest))

    def pks(self) -> dict[str, bytes]:
        """node_id -> public key of every cluster node (honest and member)."""
        out = {}
        for n in self.nodes:
            s = n.status()
            if s:
                out[s["node_id"]] = bytes.fromhex(s["public_key"])
        return out

    def wait_ready(self, min_round: int, min_acc: float, timeout: float) -> None:
        t0 = time.monotonic()
        n = len(self.nodes)
        while time.monotonic() - t0 < timeout:
            st = self.statuses()
            if all(s is not None for s in st):
                accs = [s["last_eval"]["accuracy"] for s in st if s.get("last_eval")]
                if (all(s["peers_known"] >= n - 1 for s in st) and min(s["model_round"] for s in st) >= min_round
                        and len(accs) == len(st) and sum(accs) / len(accs) >= min_acc):
                    return
            for h in self.honest:
                if not h.alive():
                    raise RuntimeError(f"honest node exited during warm-up:\n{h.log_tail()}")
            time.sleep(0.5)
        tails = "\n".join(h.log_tail(1500) for h in self.honest)
        raise RuntimeError(f"cluster not ready after {timeout:.0f} s: {self.statuses()}\n{tails}")


def _flags_to_overrides(args: list[str]) -> dict[str, Any]:
    from gossipnode.runtime.flags import NODE_FLAGS
    by_flag = {f: (name, typ) for f, name, typ, _ in NODE_FLAGS}
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        name, typ = by_flag[args[i]]
        if typ is bool:
            out[name] = True
            i += 1
        else:
            out[name] = typ(args[i + 1])
            i += 2
    return out


# ============================================================================== sending

class Poster:
    """POSTs frames over keep-alive connections, one per thread and target."""

    def __init__(self) -> None:
        self._local = threading.local()

    def post(self, url: str, frame: bytes, headers: dict[str, str] | None = None, timeout: float = 30.0) -> int:
        host_port = url.split("://", 1)[1].rstrip("/")
        conns = self._local.__dict__.setdefault("conns", {})
        for attempt in range(2):
            conn = conns.get(host_port)
            if conn is None:
                host, port = host_port.split(":")
                conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
                conns[host_port] = conn
            try:
                conn.request("POST", "/v1/messages", body=frame, headers={
                    "Content-Type": "application/x-gossipnode", **(headers or {})})
                r = conn.getresponse()
                r.read()
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conns.pop(host_port, None)
                return r.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conns.pop(host_port, None)
                if attempt:
                    return 0  # connection refused/reset: counted as not accepted
        return 0


class Sink:
    """An HTTP listener on loopback that counts every byte and request it receives."""

    def __init__(self) -> None:
        sink = self
        self.bytes = 0
        self.requests = 0
        self._lock = threading.Lock()

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(n) if n else b""
                with sink._lock:
                    sink.requests += 1
                    sink.bytes += len(data) + sum(len(k) + len(v) + 4 for k, v in self.headers.items())
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), H)
        self.server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.bytes = self.requests = 0

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ============================================================================== one attack run

@dataclass
class Row:
    name: str
    who: str
    tried: int = 0
    accepted: int = 0
    codes: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    changed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rate_ratio: float | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.changed


class Context:
    """What an attack function gets: the cluster, signers, a poster, a sink, and the Row."""

    def __init__(self, cluster: Cluster, row: Row, sink: Sink, quick: bool) -> None:
        self.cluster = cluster
        self.row = row
        self.sink = sink
        self.quick = quick
        self.poster = Poster()
        self.bad_hashes: set[bytes] = set()
        self.view_growth_allowed = 0
        self.check_sink = False
        self.min_rate: float | None = None
        self.observe_s = 4.0 if quick else 10.0
        self.net = cluster.network_id
        self.member = cluster.member.signer() if cluster.member else None
        st = [s for s in cluster.statuses() if s]
        self.R = max(s["round"] for s in st)
        self.peers = {h.url: get_json(h.url + "/v1/peers")["peers"] for h in cluster.honest}
        self.all_pks = cluster.pks()

    def signer(self, who: str) -> Signer:
        if who == "member":
            assert self.member is not None
            return self.member
        return Signer(Identity.generate(), self.net)

    def targets(self, signer: Signer) -> list[str]:
        return [h.url for h in self.cluster.honest]

    def send(self, url: str, frame: bytes, headers: dict[str, str] | None = None) -> int:
        code = self.poster.post(url, frame, headers)
        self.row.tried += 1
        self.row.codes[code] += 1
        if code == 202:
            self.row.accepted += 1
        return code

    def send_many(self, jobs: Iterable[tuple[str, bytes]], workers: int = 8) -> None:
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(lambda j: self.send(*j), jobs))

    def current_model(self) -> list[Any]:
        with urllib.request.urlopen(self.cluster.honest[0].url + "/v1/models/current", timeout=10) as r:
            rows = msgpack.unpackb(r.read(), raw=False)
        return [M.RawTensor(n, d, tuple(s), b) for n, d, s, b in rows]

    def index_of(self) -> dict[bytes, int]:
        """Every cluster node's highest membership index as the honest nodes see it."""
        out: dict[bytes, int] = {}
        for plist in self.peers.values():
            for p in plist:
                pk = bytes.fromhex(p["public_key"])
                out[pk] = max(out.get(pk, 0), p["index"])
        return out

    def addresses_of(self) -> dict[bytes, tuple[str, ...]]:
        out: dict[bytes, tuple[str, ...]] = {}
        for plist in self.peers.values():
            for p in plist:
                out.setdefault(bytes.fromhex(p["public_key"]), tuple(p["addresses"]))
        return out


def _work(statuses: list[dict[str, Any] | None]) -> int:
    return sum(s["rounds_trained"] + s["rounds_aggregated"] for s in statuses if s)


def measure_rate(cluster: Cluster, seconds: float) -> float:
    w0, t0 = _work(cluster.statuses()), time.monotonic()
    time.sleep(seconds)
    return (_work(cluster.statuses()) - w0) / (time.monotonic() - t0)


def view_snapshot(cluster: Cluster) -> dict[str, dict[str, tuple[str, tuple[str, ...]]]]:
    """For each honest node: node_id -> (status, addresses) of every cluster node it knows."""
    ids = set(cluster.pks())
    out = {}
    for h in cluster.honest:
        try:
            peers = get_json(h.url + "/v1/peers")["peers"]
        except (OSError, ValueError):
            continue
        out[h.url] = {p["node_id"]: (p["status"], tuple(p["addresses"])) for p in peers if p["node_id"] in ids}
    return out


def run_attack(cluster: Cluster, name: str, who: str, fn: Callable[[Context], None], sink: Sink,
               quick: bool, base_rate: float, background: bool = False) -> Row:
    row = Row(name, who)
    ctx = Context(cluster, row, sink, quick)
    before = cluster.statuses()
    views0 = view_snapshot(cluster)
    rej0 = Counter()
    for s in before:
        if s:
            rej0.update(s["messages_rejected"])
    acc0 = [s["last_eval"]["accuracy"] for s in before if s and s.get("last_eval")]
    acc0m = sum(acc0) / max(1, len(acc0))
    known0 = max(s["peers_known"] for s in before if s)
    sink.reset()
    w0, t0 = _work(before), time.monotonic()
    lock = threading.Lock()
    seen_bad: set[str] = set()
    worst_gap = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            st = [s for s in cluster.statuses() if s]
            top = max((s["model_round"] for s in st), default=0)
            for s in st:
                with lock:
                    hs = {s["model_hash"], (s.get("last_eval") or {}).get("model_hash")}
                    for h in ctx.bad_hashes:
                        if h.hex() in hs:
                            seen_bad.add(s["node_id"])
                    worst_gap[0] = max(worst_gap[0], s["round"] - top)
            stop.wait(0.3)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        fn(ctx)
        if not background:
            time.sleep(ctx.observe_s)
    except Exception as e:  # noqa: BLE001 - a crafting failure is a row, not a crash
        row.notes.append(f"attack error: {type(e).__name__}: {e}"[:160])
    stop.set()
    watcher.join(5)
    row.seconds = time.monotonic() - t0
    after = cluster.statuses()
    if base_rate > 0:
        row.rate_ratio = (_work(after) - w0) / row.seconds / base_rate
    for s in after:
        if s:
            row.reasons.update(s["messages_rejected"])
    row.reasons.subtract(rej0)
    row.reasons = Counter({k: v for k, v in row.reasons.items() if v > 0})

    # ---- what changed on the honest nodes
    if seen_bad:
        row.changed.append(f"model: {len(seen_bad)} node(s) held an attacker model")
    dead = [h.url for h in cluster.honest if not h.alive()]
    finished = [s["node_id"] for s in after if s and s.get("finished")]
    if dead or finished:
        row.changed.append(f"exit: {len(dead) + len(finished)} node(s) left")
    if worst_gap[0] > ctx.cluster.window + 2:
        row.changed.append(f"round: estimate {worst_gap[0]} rounds above the newest model round")
    live = [s for s in after if s]
    accs = [s["last_eval"]["accuracy"] for s in live if s.get("last_eval")]
    if accs and sum(accs) / len(accs) < acc0m - 0.2:
        row.changed.append(f"accuracy {acc0m:.2f} -> {sum(accs) / len(accs):.2f}")
    nonfinite = _nonfinite_models(cluster)
    if nonfinite:
        row.changed.append(f"model: {nonfinite} node(s) hold a non-finite model")
    ids = set(ctx.all_pks)
    frozen, dips = _round_effects(cluster, ctx.R, ids, acc0m)
    if frozen >= 2:
        row.changed.append(f"learning: {frozen} aggregations gave every honest contributor weight 0")
    if dips:
        row.changed.append(f"accuracy: {dips} evaluation(s) fell below {min(acc0m - 0.3, DIP_FLOOR):.2f}")
    views1 = view_snapshot(cluster)
    moved = sum(1 for url, v in views0.items() for nid, rec in v.items() if views1.get(url, {}).get(nid) != rec)
    if moved:
        row.changed.append(f"view: {moved} record(s) of cluster nodes changed")
    known1 = max((s["peers_known"] for s in live), default=known0)
    if known1 - known0 > ctx.view_growth_allowed:
        row.changed.append(f"view: peers_known {known0} -> {known1}")
    elif known1 != known0:
        row.notes.append(f"peers_known {known0} -> {known1}")
    if ctx.min_rate is not None and row.rate_ratio is not None and row.rate_ratio < ctx.min_rate:
        row.changed.append(f"rate: rounds slowed to {row.rate_ratio:.2f}x")
    if row.codes.get(500):
        row.changed.append(f"{row.codes[500]} server error(s)")
    if ctx.check_sink:
        row.notes.append(f"sink got {sink.bytes} B in {sink.requests} requests")
        if sink.bytes:
            row.changed.append(f"reflection: {sink.bytes} B sent to the attacker's URL")
    return row


DIP_FLOOR = 0.2   # MNIST-1D has 10 classes: an attacker's NaN/zero/huge model evaluates near 0.1


def _round_effects(cluster: Cluster, since: int, ids: set[str], acc0: float) -> tuple[int, int]:
    """(aggregations after round `since` that gave all honest contributors weight 0 or a
    non-finite one, evaluations after it far below the accuracy before the attack)."""
    frozen = dips = 0
    for h in cluster.honest:
        try:
            rounds = get_json(h.url + "/v1/rounds?limit=1000")["rounds"]
        except (OSError, ValueError):
            continue
        for r in rounds:
            if r["round"] <= since:
                continue
            w = (r.get("aggregation") or {}).get("weights") or {}
            honest = [v for p, v in w.items() if p in ids]
            if honest and all(not (isinstance(v, int | float) and np.isfinite(v) and v > 0) for v in honest):
                frozen += 1
            acc = r.get("accuracy")
            # Near chance, not merely low: a 3-node network's honest evaluations swing by 0.3.
            if acc is not None and (not np.isfinite(acc) or acc < min(acc0 - 0.3, DIP_FLOOR)):
                dips += 1
    return frozen, dips


def _nonfinite_models(cluster: Cluster) -> int:
    bad = 0
    for h in cluster.honest:
        try:
            with urllib.request.urlopen(h.url + "/v1/models/current", timeout=10) as r:
                rows = msgpack.unpackb(r.read(), raw=False)
        except (OSError, ValueError):
            continue
        for _, dtype, _shape, data in rows:
            a = np.frombuffer(data, dtype=np.dtype(dtype))
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                bad += 1
                break
    return bad


# ============================================================================== the attacks

def atk_aggregated(ahead: int) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        s = ctx.signer(ctx.row.who)
        base = ctx.current_model()
        jobs = []
        # NaN, 1e30 and all-zero models, and a small-norm one (the output bias shifted) that
        # only the adoption check can tell from an honest model
        for t in [tensors_like(base, fill=f) for f in (float("nan"), 1e30, 0.0)] + [collapse(base, 20.0)]:
            msg = model_msg(ctx.R + ahead, M.ModelKind.AGGREGATED, t)
            ctx.bad_hashes.add(msg.model)
            jobs += [(u, s.frame(msg)) for u in ctx.targets(s)]
        ctx.send_many(jobs)
    return run


def atk_trained_nan(ctx: Context) -> None:
    s = ctx.signer(ctx.row.who)
    base = ctx.current_model()
    t = tensors_like(base, fill=float("nan"))
    jobs = []
    for k in (ctx.R, ctx.R + 1, ctx.R + 2):
        msg = model_msg(k, M.ModelKind.TRAINED, t)
        ctx.bad_hashes.add(msg.model)
        jobs += [(u, s.frame(msg)) for u in ctx.targets(s)]
    ctx.send_many(jobs)


def _view_frame(s: Signer, ctx: Context, records: tuple) -> bytes:
    return s.frame(build(M.ViewShare, round=ctx.R, view=records))


def atk_leave_all(ctx: Context) -> None:
    s = ctx.signer(ctx.row.who)
    idx, addrs = ctx.index_of(), ctx.addresses_of()
    recs = tuple(record(s.identity, ctx.net, pk, ctx.R, idx.get(pk, 1) + 1, M.Status.LEAVE, addrs.get(pk, ()))
                 for pk in ctx.all_pks.values() if pk != s.pk)
    f = _view_frame(s, ctx, recs)
    ctx.send_many([(u, f) for u in ctx.targets(s)])
    # and the same records riding on a model message
    msg = model_msg(ctx.R, M.ModelKind.TRAINED, tuple(ctx.current_model()), view=recs)
    ctx.send_many([(u, s.frame(msg)) for u in ctx.targets(s)])


def atk_gossip_kind(ctx: Context) -> None:
    s = ctx.signer(ctx.row.who)
    msg = model_msg(ctx.R, M.ModelKind.GOSSIP, tuple(ctx.current_model()))
    ctx.send_many([(u, s.frame(msg)) for u in ctx.targets(s)])


def atk_keyless(n: int) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        s = ctx.signer(ctx.row.who)
        recs = tuple(record(s.identity, ctx.net, os.urandom(32), ctx.R, 1, M.Status.JOIN,
                            (f"http://{LOOPBACK}:9/p{i}",)) for i in range(n))
        f = _view_frame(s, ctx, recs)
        ctx.send_many([(u, f) for u in ctx.targets(s)])
    return run


def atk_redirect(ctx: Context) -> None:
    s = ctx.signer(ctx.row.who)
    ctx.check_sink = True
    idx = ctx.index_of()
    recs = tuple(record(s.identity, ctx.net, pk, ctx.R, idx.get(pk, 1) + 1, M.Status.JOIN, (ctx.sink.url,))
                 for pk in ctx.all_pks.values() if pk != s.pk)
    f = _view_frame(s, ctx, recs)
    ctx.send_many([(u, f) for u in ctx.targets(s)])


def atk_last_active(ctx: Context) -> None:
    s = ctx.signer(ctx.row.who)
    idx, addrs = ctx.index_of(), ctx.addresses_of()
    own_index = idx.get(s.pk, 1)
    own_addr = addrs.get(s.pk, (f"http://{LOOPBACK}:9",))
    recs = [record(s.identity, ctx.net, s.pk, INT63_MAX, own_index, M.Status.JOIN, own_addr)]  # validly signed
    recs += [record(s.identity, ctx.net, pk, INT63_MAX, idx.get(pk, 1), M.Status.JOIN, addrs.get(pk, ()))
             for pk in ctx.all_pks.values() if pk != s.pk]
    frames = [_view_frame(s, ctx, tuple(recs)),
              s.frame(build(M.Ping, round=INT63_MAX, nonce=1)),
              s.frame(build(M.Pong, round=INT63_MAX, nonce=1)),
              s.frame(advertise(s.identity, ctx.net, INT63_MAX, own_index, M.Status.JOIN, own_addr))]
    ctx.send_many([(u, f) for u in ctx.targets(s) for f in frames], workers=1)
    ctx.view_growth_allowed = 1 if ctx.row.who == "fresh" else 0  # a fresh key may join as itself


def atk_flood(n: int) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        ctx.check_sink = False
        targets = [h.url for h in ctx.cluster.honest]
        cap = ctx.view_growth_allowed = _view_cap()
        ctx.min_rate = 0.5

        def frames() -> Iterable[tuple[str, bytes]]:
            for i in range(n):
                s = Signer(Identity.generate(), ctx.net)
                f = s.frame(advertise(s.identity, ctx.net, ctx.R, 1, M.Status.JOIN, (f"{ctx.sink.url}/s{i}",)))
                for u in targets:
                    yield u, f
        ctx.send_many(frames(), workers=8)
        ctx.row.notes.append(f"view cap assumed {cap}; sink got {ctx.sink.requests} requests")
    return run


def _view_cap() -> int:
    """The view size the honest nodes may grow to (their --max-view if they have one)."""
    from gossipnode.runtime.config import NodeConfig
    for name in ("max_view", "view_cap", "max_peers", "view_size"):
        v = getattr(NodeConfig(), name, None)
        if isinstance(v, int) and v > 0:
            return v
    return 1000


def atk_history_shape(ctx: Context) -> None:
    s = ctx.signer(ctx.row.who)
    base = tuple(ctx.current_model())
    placeholder = to_raw("history", np.zeros((0, 1, 1), np.float32))
    hist = build(M.HistoryRecord, peer=s.pk, round=ctx.R, distance=1, tensors=(placeholder,))
    msg = model_msg(ctx.R + 1, M.ModelKind.TRAINED, base, histories=(hist,))
    old = msgpack.packb(["history", "<f4", [0, 1, 1]], use_bin_type=True)[1:]
    new = msgpack.packb(["history", "<f4", [0, 1 << 62, 1 << 62]], use_bin_type=True)[1:]
    frames = []
    for _ in ctx.targets(s):
        frames.append(s.frame(msg, patches=[(old, new)]))
    ctx.send_many(list(zip(ctx.targets(s), frames, strict=True)))


def atk_reply_to(n: int) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        s = ctx.signer(ctx.row.who)
        ctx.check_sink = True
        h = bytes.fromhex(ctx.cluster.statuses()[0]["model_hash"])
        for u in ctx.targets(s):
            for _ in range(n):
                ctx.send(u, s.frame(build(M.ModelRequest, model=h)), {"X-Gossipnode-Reply-To": ctx.sink.url})
        time.sleep(2.0)
    return run


def atk_big_bodies(count: int, mb: int) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        s = ctx.signer("fresh")
        target = ctx.cluster.honest[0]
        n = mb * (1 << 20) // 4
        big = (M.RawTensor("w", "<f4", (n,), bytes(n * 4)),)
        frame = s.frame(build(M.ModelMsg, round=ctx.R + 1, kind=M.ModelKind.AGGREGATED, model=model_hash(big),
                              view=(), base=None, tensors=big, histories=()))
        idle = rss_kib(target.pid)[0]
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(target.pid)[0])
                done.wait(0.05)
        th = threading.Thread(target=sample, daemon=True)
        th.start()
        t0 = time.monotonic()
        ctx.send_many([(target.url, frame)] * count, workers=count)
        took = time.monotonic() - t0
        time.sleep(1.0)
        done.set()
        th.join()
        ratio = peak[0] / max(1, idle)
        ctx.row.notes.append(f"RSS idle {idle // 1024} MB, peak {peak[0] // 1024} MB ({ratio:.2f}x), {took:.1f} s")
        if ratio >= 2.0:
            ctx.row.changed.append(f"memory: peak RSS {ratio:.2f}x idle")
    return run


def _hold_connection(url: str, slow: bool, bound: float, out: dict[str, Any]) -> None:
    host, port = url.split("://", 1)[1].split(":")
    t0 = time.monotonic()
    out["closed_after"] = None
    try:
        sock = socket.create_connection((host, int(port)), timeout=2.0)
    except OSError as e:
        out["error"] = str(e)
        return
    sock.settimeout(1.0)
    head = f"POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100000\r\n\r\n".encode()
    sent = 0
    try:
        while time.monotonic() - t0 < bound:
            if slow:
                chunk = head[sent:sent + 1] if sent < len(head) else b"x"
                sock.sendall(chunk)
                sent += 1
            try:
                if sock.recv(4096) == b"":
                    out["closed_after"] = time.monotonic() - t0
                    return
            except TimeoutError:
                pass
            except OSError:
                out["closed_after"] = time.monotonic() - t0
                return
    except OSError:
        out["closed_after"] = time.monotonic() - t0
        return
    finally:
        sock.close()


def atk_connection(slow: bool, bound: float) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        out: dict[str, Any] = {}
        ctx.row.tried = 1
        _hold_connection(ctx.cluster.honest[0].url, slow, bound, out)
        c = out.get("closed_after")
        if c is None:
            ctx.row.changed.append(f"connection still open after {bound:.0f} s")
            ctx.row.notes.append(out.get("error", f"open > {bound:.0f} s"))
        else:
            ctx.row.notes.append(f"closed by the node after {c:.1f} s")
    return run


def atk_malicious_aggregator(mode: str = "replace") -> Callable[[Context], None]:
    """The member turns malicious whenever it is sampled as an aggregator (a legitimate role,
    so role checks let its models through): "replace" sends a poisoned model, "drop" ignores
    the round's updates."""
    def run(ctx: Context) -> None:
        assert ctx.cluster.member is not None
        m = ctx.cluster.member
        m.poison_aggregation = mode
        r0 = m.node.telemetry.rounds_aggregated
        try:
            time.sleep(ctx.observe_s * 2)
        finally:
            m.poison_aggregation = ""
        ctx.bad_hashes |= m.poisoned
        ctx.row.tried = m.node.telemetry.rounds_aggregated - r0
        ctx.row.notes.append(f"member aggregated {ctx.row.tried} round(s) ({mode})")
    return run


# ============================================================================== main

def plan(quick: bool) -> list[tuple[str, str, Callable[[Context], None], bool]]:
    """(name, who, attack, needs its own wait) in order."""
    p: list[tuple[str, str, Callable[[Context], None], bool]] = []
    whos = ("fresh", "member")
    for who in whos:
        p.append(("AGGREGATED R+1 (NaN, 1e30, 0, bias shift)", who, atk_aggregated(1), False))
    for who in ("fresh",) if quick else whos:
        p.append(("AGGREGATED R+5 (NaN, 1e30, 0, bias shift)", who, atk_aggregated(5), False))
    for who in whos:
        p.append(("TRAINED NaN (R..R+2)", who, atk_trained_nan, False))
        p.append(("LEAVE records for every peer", who, atk_leave_all, False))
    p.append(("MODEL of kind GOSSIP to a MoDeST node", "fresh", atk_gossip_kind, False))
    for who in ("fresh",) if quick else whos:
        p.append(("3,000 keyless peers in a VIEW", who, atk_keyless(3000), False))
    for who in whos:
        p.append(("address redirection records", who, atk_redirect, False))
        p.append(("last_active = 2^63-1 (record, PING, PONG, ADVERTISE)", who, atk_last_active, False))
    n_flood = 200 if quick else 1000
    p.append((f"ADVERTISE flood, {n_flood} fresh keys", "fresh", atk_flood(n_flood), True))
    for who in ("fresh",) if quick else whos:
        p.append(("history tensor of shape (0, 2^62, 2^62)", who, atk_history_shape, False))
    for who in whos:
        p.append(("MODEL_REQUEST x20 with reply-to -> attacker", who, atk_reply_to(20), False))
    count, mb = (2, 20) if quick else (8, 200)
    p.append((f"{count} concurrent {mb} MB bodies", "fresh", atk_big_bodies(count, mb), False))
    return p


def summary(row: Row) -> str:
    rate = "-" if row.rate_ratio is None else f"{row.rate_ratio:.2f}"
    extra = "; ".join(row.changed + row.notes)
    return (f"{'ok     ' if row.ok else 'CHANGED'} {row.name} [{row.who}]: tried {row.tried}, 202 {row.accepted}, "
            f"rejected {dict(row.reasons)}, rate {rate}{'; ' + extra if extra else ''}")


def print_table(rows: list[Row], out=sys.stdout) -> None:
    head = ["attack", "key", "tried", "202", "rejections (honest nodes)", "honest state changed", "rate", "notes"]
    lines = []
    for r in rows:
        rej = ", ".join(f"{k} {v}" for k, v in sorted(r.reasons.items())) or "-"
        lines.append([r.name, r.who, str(r.tried), str(r.accepted), rej,
                      "; ".join(r.changed) or "no", "-" if r.rate_ratio is None else f"{r.rate_ratio:.2f}",
                      "; ".join(r.notes) or ""])
    print("| " + " | ".join(head) + " |", file=out)
    print("|" + "|".join("---" for _ in head) + "|", file=out)
    for ln in lines:
        print("| " + " | ".join(c.replace("|", "/") for c in ln) + " |", file=out)


def sigterm_check(cluster: Cluster, bound: float = 5.0) -> Row:
    """SIGTERM to every honest node after the attacks: each must exit within `bound` s."""
    row = Row(f"SIGTERM after the attacks: exit within {bound:.0f} s?", "-")
    t0 = time.monotonic()
    for h in cluster.honest:
        if h.alive():
            h.proc.send_signal(signal.SIGTERM)
            row.tried += 1
    took = []
    for h in cluster.honest:
        try:
            h.proc.wait(max(0.1, bound + 5 - (time.monotonic() - t0)))
            took.append(time.monotonic() - t0)
        except subprocess.TimeoutExpired:
            took.append(float("inf"))
    row.notes.append("exit after " + ", ".join(f"{t:.1f}" for t in took) + " s; codes "
                     + ", ".join(str(h.proc.returncode) for h in cluster.honest))
    if max(took, default=0) > bound:
        row.changed.append(f"a node took over {bound:.0f} s to exit")
    return row


def rounds40_check(root: Path, quick: bool) -> Row:
    """A --rounds 40 cluster under a continuous last_active = 2^63-1 attack: nobody leaves early."""
    row = Row("--rounds 40 cluster under last_active = 2^63-1: nobody leaves early", "fresh+member")
    c = Cluster(root, extra=["--rounds", "40", "--local-epochs", "3", "--round-timeout", "3"], tag="r40")
    try:
        c.start()
        c.wait_ready(min_round=2, min_acc=0.0, timeout=120)
        sink = Sink()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240 and any(h.alive() for h in c.honest):
            for who in ("fresh", "member"):
                r = Row("", who)
                try:
                    ctx = Context(c, r, sink, quick)
                    atk_last_active(ctx)
                except Exception:  # noqa: BLE001 - nodes finishing mid-attack
                    pass
                row.tried += r.tried
                row.accepted += r.accepted
            time.sleep(1.0)
        finals = [h.final_status() or {} for h in c.honest]
        mr = [f.get("model_round", -1) for f in finals]
        row.notes.append(f"final model rounds {mr}, took {time.monotonic() - t0:.0f} s")
        for f in finals:
            row.reasons.update(f.get("messages_rejected", {}))
        if min(mr) < 40 - TAU:
            row.changed.append(f"exit: a node left at model round {min(mr)} < {40 - TAU}")
        sink.close()
    finally:
        c.stop()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a subset with smaller sizes (CI)")
    ap.add_argument("--dir", default="", help="state and logs here (default: a temp dir, removed)")
    ap.add_argument("--only", default="", help="run only attacks whose name contains this")
    ap.add_argument("--json-out", default="", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    quick = args.quick
    root = Path(args.dir or tempfile.mkdtemp(prefix="gossipnode-attacks-"))
    root.mkdir(parents=True, exist_ok=True)
    import logging
    logging.basicConfig(filename=str(root / "member.log"), level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = node_flags()
    quorum = "--accept-quorum" in flags
    print(f"attacks against a live cluster ({'quick' if quick else 'full'}); state and logs in {root}", flush=True)
    sink = Sink()
    rows: list[Row] = []
    cluster: Cluster | None = None
    n_cluster = 0
    bound = 30.0 if quick else 60.0

    def fresh_cluster() -> tuple[Cluster, float]:
        nonlocal n_cluster
        n_cluster += 1
        c = Cluster(root, extra=["--rounds", "100000"], tag=f"c{n_cluster}")
        c.start()
        c.wait_ready(min_round=5, min_acc=0.5 if quick else 0.6, timeout=180)
        rate = measure_rate(c, 4.0 if quick else 8.0)
        print(f"cluster {n_cluster} ready: {rate:.1f} trainings+aggregations per s", flush=True)
        return c, rate

    conn_rows: list[tuple[Row, threading.Thread]] = []
    try:
        cluster, rate = fresh_cluster()
        for name, who, fn, rebase in plan(quick):
            if args.only and args.only not in name:
                continue
            if rebase:  # this row's verdict depends on the rate: measure it again just before
                rate = measure_rate(cluster, 4.0 if quick else 8.0)
            row = run_attack(cluster, name, who, fn, sink, quick, rate)
            rows.append(row)
            print(summary(row), flush=True)
            if not row.ok:
                cluster.stop()
                cluster, rate = fresh_cluster()
        if not args.only or "aggregator" in args.only:
            for mode in ("replace", "drop"):   # default settings: quorum 1, the adoption check
                row = run_attack(cluster, f"malicious aggregator ({mode}), defaults", "member",
                                 atk_malicious_aggregator(mode), sink, quick, rate, background=True)
                rows.append(row)
                print(summary(row), flush=True)
                if not row.ok:
                    cluster.stop()
                    cluster, rate = fresh_cluster()
            if quorum:
                cluster.stop()
                n_cluster += 1
                c = Cluster(root, extra=["--rounds", "100000", "--aggregators", "3", "--accept-quorum", "2"],
                            tag=f"c{n_cluster}")
                cluster = c
                c.start()
                c.wait_ready(min_round=5, min_acc=0.5 if quick else 0.6, timeout=180)
                q_rate = measure_rate(c, 3.0 if quick else 6.0)
                row = run_attack(c, "malicious aggregator (--aggregators 3 --accept-quorum 2)", "member",
                                 atk_malicious_aggregator(), sink, quick, q_rate, background=True)
                row.notes.append(f"quorum cluster rate {q_rate:.1f}/s vs {rate:.1f}/s without")
            else:
                row = Row("malicious aggregator", "member", notes=["skipped: no --accept-quorum in this build"])
            rows.append(row)
            print(summary(row), flush=True)
        if not args.only or "connection" in args.only:
            for slow, label in ((True, "slowloris connection (1 byte/s)"), (False, "idle connection")):
                r = Row(f"{label}: closed within {bound:.0f} s?", "-")
                th = threading.Thread(target=atk_connection(slow, bound), args=(Context(cluster, r, sink, quick),),
                                      daemon=True)
                th.start()
                conn_rows.append((r, th))
            for r, th in conn_rows:
                th.join(bound + 10)
                rows.append(r)
                print(summary(r), flush=True)
        if not args.only:
            row = sigterm_check(cluster)
            rows.append(row)
            print(summary(row), flush=True)
        if not quick and (not args.only or "rounds 40" in args.only):
            cluster.stop()
            cluster = None
            row = rounds40_check(root, quick)
            rows.append(row)
            print(summary(row), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
        sink.close()
    print()
    print(f"{time.strftime('%Y-%m-%d')}: python benchmarks/attacks.py{' --quick' if quick else ''}; "
          f"3 honest processes + 1 member; {n_cluster} cluster(s) used")
    print_table(rows)
    if args.json_out:
        data = [{f.name: (dict(v) if isinstance(v := getattr(r, f.name), Counter) else v)
                 for f in dataclasses.fields(r)} for r in rows]
        Path(args.json_out).write_text(json.dumps(data, indent=2, default=str))
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    bad = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} attacks left honest state unchanged")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
