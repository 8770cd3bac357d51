"""The training child process (`--train-process on`): `python -m gossipnode.runtime.trainchild`.
It loads data and model itself from the node's configuration (the first frame) and trains what
the parent sends; the parent keeps the state of record. Frames both ways on stdin/stdout:
4-byte big-endian length + msgpack (tensors as raw little-endian bytes, never pickle). Log
records go to the parent as frames (the parent logs them); the child exits quietly, code 0,
when the parent stops, dies (PR_SET_PDEATHSIG) or closes the pipe."""
from __future__ import annotations

import logging
import math
import os
import signal
import struct
import sys
import threading
from dataclasses import fields
from typing import Any, BinaryIO

import msgpack
import numpy as np

MAX_FRAME = 1 << 31
_LEN = struct.Struct(">I")


def write_frame(f: BinaryIO, obj: Any, lock: threading.Lock) -> None:
    body = msgpack.packb(obj, use_bin_type=True)
    with lock:
        f.write(_LEN.pack(len(body)))
        f.write(body)
        f.flush()


def read_frame(f: BinaryIO, max_size: int) -> Any:
    """The next frame, or None at the end of the stream. ValueError for a bad or oversized one."""
    head = f.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    if n > max_size:
        raise ValueError(f"frame of {n} bytes over the limit of {max_size}")
    body = f.read(n)
    if len(body) < n:
        return None
    return msgpack.unpackb(body, raw=False, max_bin_len=max_size, max_str_len=1 << 20,
                           max_array_len=1 << 20, max_map_len=1 << 16)


def pack_model(model) -> list:
    return [[t.name, t.dtype, list(t.shape), bytes(t.data)] for t in model]


def unpack_model(items: Any) -> tuple:
    from gossipnode.core.messages import RawTensor
    if not isinstance(items, list):
        raise ValueError("model: not a list")
    out = []
    for it in items:
        if not (isinstance(it, list) and len(it) == 4 and isinstance(it[0], str) and isinstance(it[1], str)
                and isinstance(it[2], list) and all(isinstance(d, int) and d >= 0 for d in it[2])
                and isinstance(it[3], bytes)):
            raise ValueError("model: bad tensor entry")
        try:
            size = math.prod(it[2]) * np.dtype(it[1]).itemsize
        except TypeError:
            raise ValueError(f"model: bad dtype {it[1][:20]!r}") from None
        if len(it[3]) != size:
            raise ValueError(f"model: tensor {it[0][:100]!r} has {len(it[3])} bytes, its shape needs {size}")
        out.append(RawTensor(it[0], it[1], tuple(it[2]), it[3]))
    return tuple(out)


class _FrameLog(logging.Handler):
    def __init__(self, out: BinaryIO, lock: threading.Lock) -> None:
        super().__init__()
        self.out, self.lock = out, lock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_frame(self.out, {"op": "log", "level": record.levelno, "name": record.name,
                                   "msg": record.getMessage()[:4000]}, self.lock)
        except Exception:
            os._exit(0)


def _die_with_parent() -> None:
    try:   # Linux: SIGTERM when the parent dies, even by SIGKILL
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _renice_threads(nice: int) -> None:
    """--train-nice: Linux niceness is per thread (numpy's BLAS threads exist before main runs),
    so set it on every thread of this process. The node's event loop then wins the CPU."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:
            pass


def main() -> None:
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, lambda *_: os._exit(0))
    _die_with_parent()
    parent = os.getppid()
    inp, out, lock = sys.stdin.buffer, sys.stdout.buffer, threading.Lock()
    sys.stdout = sys.stderr   # nothing but frames on the pipe
    root = logging.getLogger()
    root.handlers[:] = [_FrameLog(out, lock)]
    root.setLevel(logging.INFO)
    if os.getppid() != parent or parent == 1:
        os._exit(0)
    from gossipnode.runtime.config import NodeConfig
    first = read_frame(inp, 1 << 20)
    if not isinstance(first, dict) or not isinstance(first.get("cfg"), dict):
        os._exit(0)
    names = {f.name for f in fields(NodeConfig)}
    cfg = NodeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in first["cfg"].items() if k in names})
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + max(0, int(cfg.train_nice)))
    _renice_threads(nice)   # before torch starts its threads: they inherit it
    from gossipnode.learn.learner import Learner
    from gossipnode.learn.trainer import TrainingCancelled
    learner = Learner.create(cfg, init_seed=first.get("init_seed"))
    learner.warm_up()
    _renice_threads(nice)   # any thread started by one that predates the first call
    write_frame(out, {"op": "ready"}, lock)
    max_size = int(first.get("max_frame", MAX_FRAME))
    jobs: list[Any] = []
    have = threading.Condition()
    cancel = threading.Event()
    cancelled: set[Any] = set()   # job ids (the parent has one job out at a time)
    current: list[Any] = [None]

    def reader() -> None:   # frames from the parent; the end of the stream ends the process
        try:
            while (msg := read_frame(inp, max_size)) is not None:
                if isinstance(msg, dict) and msg.get("op") == "cancel":
                    with have:
                        cancelled.add(msg.get("id"))
                        del_ = len(cancelled) > 64 and cancelled.clear()
                        if msg.get("id") == current[0] or del_:
                            cancel.set()
                elif isinstance(msg, dict) and msg.get("op") == "train":
                    with have:
                        jobs.append(msg)
                        have.notify()
        except (ValueError, OSError):
            pass
        os._exit(0)

    threading.Thread(target=reader, daemon=True).start()
    while True:
        with have:
            while not jobs:
                have.wait()
            job = jobs.pop(0)
            current[0] = job.get("id")
            cancel.clear()
            if current[0] in cancelled:
                cancel.set()
        try:
            model, stats = learner.train(unpack_model(job.get("model")), cancel)
            reply = {"op": "done", "model": pack_model(model), "stats": [stats.samples, stats.steps, stats.epochs,
                                                                         stats.loss, stats.seconds]}
        except TrainingCancelled:
            reply = {"op": "cancelled"}
        except Exception as e:   # reported to the parent, which fails the round
            reply = {"op": "error", "error": f"{type(e).__name__}: {e}"[:2000]}
        with have:
            cancelled.discard(current[0])
        write_frame(out, reply | {"id": job.get("id")}, lock)


if __name__ == "__main__":
    main()
