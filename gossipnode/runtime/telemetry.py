"""What a node reports: counters, the round log, rejections, evaluations; `/v1/status`,
`/v1/peers`, `/v1/rounds` and the metrics are read from here (the REST app reads telemetry, not
the node). The services add their own status fields as `parts`."""
from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from gossipnode.core import actions as act

from .events import EventHub
from .looplag import LoopLag

log = logging.getLogger("gossipnode.node")
MAX_ROUNDS_KEPT = 1000
LOGGED_EVENTS = ("stalled", "restart", "peers_unreachable", "partition_healing", "merge",
                 "round_from_partition")


class Telemetry:
    def __init__(self, api_token: str = "") -> None:
        self.api_token = api_token
        self.events = EventHub()
        self.looplag = LoopLag()   # the event loop's lag, `event_loop` in the status
        self.started_at = time.time()
        self.stopping = False
        self.rejected: Counter[str] = Counter()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.messages_by_type: Counter[str] = Counter()   # frames sent, by message type
        self.send_failures = 0
        self.rounds: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.rounds_trained = 0
        self.rounds_aggregated = 0
        self.last_eval: dict[str, Any] | None = None
        self.last_aggregation: dict[str, Any] | None = None
        # set by the node: its status fields in order, the peer list, and model lookups
        self.parts: list[Callable[[], dict[str, Any]]] = []
        self.peers: Callable[[], list[dict[str, Any]]] = list
        self.model: Callable[[bytes], Any] = lambda _h: None
        self.current: Callable[[], bytes] = bytes

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in self.parts:
            out |= part()
        return out

    def counters(self) -> dict[str, Any]:
        return {
            "rounds_trained": self.rounds_trained,
            "rounds_aggregated": self.rounds_aggregated,
            "last_eval": self.last_eval,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "messages_sent_by_type": dict(self.messages_by_type),
            "send_failures": self.send_failures,
            "messages_rejected": dict(self.rejected),
        }

    # ---- recording ------------------------------------------------------------------------
    def count_reject(self, reason: str, detail: str = "") -> str:
        """Every rejection is counted and its first occurrence logged; returns the reason."""
        self.rejected[reason] += 1
        if self.rejected[reason] == 1 or log.isEnabledFor(logging.DEBUG):
            log.warning("rejected a message: %s %s", reason, detail)
        return reason

    def sent(self, msg_type: str, nbytes: int) -> None:
        self.bytes_sent += nbytes
        self.messages_sent += 1
        self.messages_by_type[msg_type] += 1

    def received(self, nbytes: int) -> None:
        self.bytes_received += nbytes
        self.messages_received += 1

    def round(self, k: int) -> dict[str, Any]:
        r = self.rounds.get(k)
        if r is None:
            r = {"round": k, "roles": [], "participants": [], "accuracy": None, "loss": None,
                 "started_at": round(time.time(), 3), "duration_s": None, "events": []}
            self.rounds[k] = r
            while len(self.rounds) > MAX_ROUNDS_KEPT:
                self.rounds.popitem(last=False)
        return r

    def record(self, e: act.Event) -> None:
        if e.kind == "rejected":   # the core's rejections (SPEC 15): counted, logged once, no state
            reason = str(e.detail.get("reason", "rejected"))
            n = int(e.detail.get("count", 1))
            self.count_reject(reason, str(e.detail))
            self.rejected[reason] += n - 1
            return
        r = self.round(e.round)
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

    def adopted(self, k: int) -> None:
        """Round k's model is held: round k-1 is over."""
        self.round(k)
        prev = self.rounds.get(k - 1)
        if prev is not None and prev["duration_s"] is None:
            prev["duration_s"] = round(time.time() - prev["started_at"], 3)

    def evaluated(self, ev: dict[str, Any], role: str) -> None:
        k = ev["round"]
        if self.last_eval is None or k >= self.last_eval["round"]:
            self.last_eval = ev
        r = self.round(k)
        r["accuracy"], r["loss"] = ev["accuracy"], ev["loss"]
        if "attack_rate" in ev:
            r["attack_rate"] = ev["attack_rate"]
        log.info("round %d (%s): accuracy %.4f loss %.4f", k, role, ev["accuracy"], ev["loss"])
        self.events.emit({"kind": "evaluated", "role": role} | ev)

    def aggregated(self, k: int, info: dict[str, Any], role: bool = True) -> None:
        """An aggregation (MoDeST, `role`: this node was the round's aggregator) or a gossip merge."""
        r = self.round(k)
        r["aggregation"] = info
        self.last_aggregation = {"round": k} | info
        self.rounds_aggregated += 1
        for peer in info.get("unfit_base", ()):   # SPEC 15: an update trained from a model we refuse
            self.count_reject("unfit_base", f"round {k}: the update of {peer} was trained from a refused model")
        if role and "aggregator" not in r["roles"]:
            r["roles"].append("aggregator")
