"""Stopping a node: LEAVE adverts, the last evaluations, the final checkpoint and status.json,
then tasks, transports and the server closed, each step within its share of the time allowed."""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from gossipnode.api import jsonout

Node = Any   # runtime.node.Node passes itself (not imported: no cycle)

log = logging.getLogger("gossipnode.node")


async def stop_node(node: Node, graceful: bool, reason: str, timeout: float | None) -> None:
    """Leave (LEAVE adverts, pending evaluations, final checkpoint and status), then close.

    Never raises before the stopped event is set. `timeout` bounds the whole stop (SIGTERM
    passes one); without it the graceful part waits as long as it usually takes (the
    evaluations of the last round, for the final status). A final checkpoint that cannot be
    written is logged, counted and kept in `stop_error` (the CLI then exits non-zero)."""
    if node._stopping:
        await node._stopped.wait()
        return
    node._stopping = True
    loop = asyncio.get_running_loop()
    end = None if timeout is None else loop.time() + timeout

    def left(default: float, reserve: float = 0.0) -> float:
        return default if end is None else max(0.05, min(default, end - loop.time() - reserve))

    # Shares of `timeout` kept for the steps after each one (3.5 s: 2.0, 1.5, 1.0, 0.8, 0.6, 0.3).
    def reserve(share: float) -> float:
        return 0.0 if timeout is None else share * timeout
    t0 = loop.time()
    try:
        node.telemetry.stopping = True
        log.info("node %s leaving: %s", node.id, reason)
        if node._train_cancel is not None:
            node._train_cancel.set()
        if graceful and node._loop is not None:
            try:
                failed0 = node.telemetry.send_failures
                sends = node.driver.leave()
                if sends:
                    await asyncio.wait(sends, timeout=left(5.0, reserve(0.57)))
                done = sum(t.done() for t in sends) - (node.telemetry.send_failures - failed0)
                log.info("stop: LEAVE advert delivered to %d of %d peers", max(0, done), len(sends))
                if node._evals:
                    await asyncio.wait(node._evals, timeout=left(30.0, reserve(0.43)))
                    if any(not t.done() for t in node._evals):
                        log.info("stop: not waiting for the last round's evaluation")
                ok = await asyncio.wait_for(asyncio.to_thread(node._checkpoint), left(1e9, reserve(0.29)))
                if ok:
                    log.info("stop: checkpoint of round %d written to %s", node.model_round, node.state_dir)
                else:
                    node.stop_error = f"could not write the final checkpoint to {node.state_dir}: " \
                                      f"{node.worker.last_checkpoint_error}"
            except TimeoutError:
                node.stop_error = f"the final checkpoint to {node.state_dir} did not finish in time"
                log.error("%s", node.stop_error)
            except Exception as e:  # never let a failing leave keep the process alive
                node.stop_error = f"leaving failed: {type(e).__name__}: {e}"
                log.exception("leaving failed")
        try:
            await asyncio.wait_for(asyncio.to_thread(write_status, node), left(5.0, reserve(0.23)))
        except TimeoutError:
            log.warning("writing status.json did not finish in time")
        others = [t for t in node._tasks if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        if others:
            await asyncio.wait(others, timeout=left(10.0, reserve(0.17)))
        log.debug("stop: tasks done")
        for tr in node.transports:
            try:
                await asyncio.wait_for(tr.stop(), left(10.0, reserve(0.086)))
            except Exception as e:
                log.warning("closing transport %s: %s", type(tr).__name__, e or type(e).__name__)
        if node._owns_learner:
            node.learner.executor.shutdown(wait=False, cancel_futures=True)
            if (close := getattr(node.learner, "close", None)) is not None:   # --train-process on
                close()
        if node._runner is not None:
            try:
                await asyncio.wait_for(node._runner.cleanup(), left(5.0))
            except Exception as e:
                log.warning("closing the HTTP server: %s", e or type(e).__name__)
        log.info("stop: node %s stopped in %.2f s (status.json written, connections closed)",
                 node.id, loop.time() - t0)
    except Exception as e:
        node.stop_error = node.stop_error or f"stopping failed: {type(e).__name__}: {e}"
        log.exception("stopping failed")
    finally:
        node._stopped.set()
        node.telemetry.events.close()


def write_status(node: Node) -> None:
    """The final status, for whoever looks after the process is gone (`gossipnode cluster`)."""
    try:
        node.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = node.state_dir / "status.json.tmp"
        tmp.write_text(jsonout.dumps(node.status() | {"finished": True}))
        tmp.replace(node.state_dir / "status.json")
    except OSError as e:
        log.warning("cannot write status.json: %s", e)
