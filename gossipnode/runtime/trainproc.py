"""`--train-process on`: training in a child process (runtime/trainchild.py), so that it never
holds the GIL of the node's event loop. `RemoteLearner` is the node's Learner (evaluation, the
adoption check and everything else stay in the node's process) whose `train` asks the child; the
parent keeps the state of record. What the child sends is checked: bounded frames, the model's
tensors must match ours, the stats must be numbers; its log records are logged here."""
from __future__ import annotations

import itertools
import logging
import math
import os
import select
import subprocess
import sys
import threading
from typing import Any

from gossipnode.learn.learner import Learner
from gossipnode.learn.trainer import TrainingCancelled, TrainStats

from .trainchild import pack_model, read_frame, unpack_model, write_frame

log = logging.getLogger("gossipnode.train")


class ChildFailed(RuntimeError):
    pass


def make_learner(cfg: Any, init_seed: int | None) -> Learner:
    """The node's learner: in-process, or with its training in a child (--train-process on)."""
    learner = Learner.create(cfg, init_seed=init_seed)
    if getattr(cfg, "train_process", "off") != "on":
        return learner
    return RemoteLearner.wrap(learner, cfg, init_seed)


class RemoteLearner(Learner):
    @classmethod
    def wrap(cls, base: Learner, cfg: Any, init_seed: int | None) -> RemoteLearner:
        self = cls(base.cfg, base.dataset, base.trainer, base.initial)
        self._init_seed = init_seed
        self._max = int(cfg.max_message_mb * (1 << 20)) * 2 + (1 << 20)
        self._ids = itertools.count(1)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        return self

    def _start(self) -> subprocess.Popen:
        from dataclasses import asdict
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "gossipnode.runtime.trainchild"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._stderr, args=(proc,), daemon=True).start()
        cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()}
        write_frame(proc.stdin, {"cfg": cfg, "init_seed": self._init_seed, "max_frame": self._max}, self._lock)
        self._proc = proc
        self._wait(proc, None, None)   # "ready": data loaded, torch warmed up
        log.info("training in child process %d", proc.pid)
        return proc

    @staticmethod
    def _stderr(proc: subprocess.Popen) -> None:   # raw stderr (a crash): logged here, bounded lines
        for line in proc.stderr:
            log.warning("training process: %s", line[:2000].decode(errors="replace").rstrip())

    def _wait(self, proc: subprocess.Popen, job: int | None, cancel: threading.Event | None) -> dict:
        sent_cancel = False
        while True:
            if cancel is not None and cancel.is_set() and not sent_cancel:
                write_frame(proc.stdin, {"op": "cancel", "id": job}, self._lock)
                sent_cancel = True
            ready, _, _ = select.select([proc.stdout], [], [], 0.05)
            if not ready:
                continue
            msg = read_frame(proc.stdout, self._max)
            if msg is None:
                raise ChildFailed(f"training process exited (code {proc.wait()})")
            if not isinstance(msg, dict):
                raise ChildFailed("training process sent a bad frame")
            if msg.get("op") == "log":
                lvl = msg.get("level")
                lvl = lvl if isinstance(lvl, int) and 0 < lvl <= 50 else logging.WARNING
                logging.getLogger("gossipnode.train.child").log(lvl, "%s", str(msg.get("msg"))[:4000])
                continue
            if msg.get("op") == "ready" or msg.get("id") == job:
                return msg

    def warm_up(self) -> float:
        """Start the child at start-up too: its data and torch are ready by the first round."""
        secs = super().warm_up()
        self._proc = self._start()
        return secs

    def train(self, model, cancel: threading.Event) -> tuple[Any, TrainStats]:
        if cancel.is_set():
            raise TrainingCancelled()
        proc = self._proc
        try:
            if proc is None or proc.poll() is not None:
                proc = self._start()
            job = next(self._ids)
            write_frame(proc.stdin, {"op": "train", "id": job, "model": pack_model(model)}, self._lock)
            msg = self._wait(proc, job, cancel)
        except (OSError, ValueError) as e:
            self.close()
            raise ChildFailed(f"training process: {e}") from None
        if msg.get("op") == "cancelled":
            raise TrainingCancelled()
        if msg.get("op") == "error":
            raise ChildFailed(str(msg.get("error"))[:2000])
        try:
            out = unpack_model(msg.get("model"))
        except ValueError as e:
            raise ChildFailed(f"training process: {e}") from None
        st = msg.get("stats")
        if (why := self.compatible(out)) is not None or not (
                isinstance(st, list) and len(st) == 5 and all(isinstance(x, int | float) and math.isfinite(x)
                                                              for x in st)):
            raise ChildFailed(f"training process sent a bad result: {why or 'stats'}")
        return out, TrainStats(int(st[0]), int(st[1]), int(st[2]), float(st[3]), float(st[4]))

    def close(self) -> None:
        """Ends the child without waiting (it exits quietly on SIGTERM or the closed pipe)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.terminate()
