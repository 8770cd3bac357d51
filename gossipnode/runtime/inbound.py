"""Inbound dispatch, mixed into `Node`: every transport's frames arrive at `_on_frame`, are
decoded (wire/), checked (model exchange, role checks, adoption check) and handed to the core
through the driver. Split from node.py as the core splits ModestCore: one job per module."""
from __future__ import annotations

import asyncio
from dataclasses import replace

from gossipnode.core import actions as act
from gossipnode.core.messages import Advertise, ModelData, ModelKind, ModelMsg, ModelRequest, Status
from gossipnode.learn.sanity import WORSE_MODEL
from gossipnode.transport.base import INBOUND_SOURCE
from gossipnode.wire.codec import decode
from gossipnode.wire.errors import WireError
from gossipnode.wire.identity import node_id

from .exchange import BIG, Rejected


class Inbound:
    def _count_reject(self, reason: str, detail: str = "") -> str:
        return self.telemetry.count_reject(reason, detail)

    async def _on_frame(self, frame: bytes, reply_to: str | None) -> str | None:
        """The one inbound handler for every transport. Returns a rejection reason or None.
        `reply_to` (a transport's unauthenticated hint) is ignored: replies go only to the
        address in the sender's own signed record."""
        if self._stopping:
            return "stopping"
        try:
            args = (frame, self.cfg.network_id, self.max_size, self.replay)
            env = await asyncio.to_thread(decode, *args) if len(frame) > BIG else decode(*args)
        except WireError as e:
            return self._count_reject(e.reason, str(e))
        self.telemetry.received(len(frame))
        sender, msg = env.sender, env.msg
        self.histories.heard(sender)
        if sender == self.pk:
            return self._count_reject("own_message")
        if isinstance(msg, ModelRequest):
            if not self.core.is_member(sender) or self.outbox.address(sender) is None:
                return self._count_reject("not_member", "model request")
            reply = self.exchange.answer_request(msg.model, sender, self._now())
            if reply is None:
                return self._count_reject("rate_limited", "model request")
            self.send(sender, reply)
            return None
        if isinstance(msg, ModelData):
            bad = self.exchange.on_model_data(msg)
            return None if bad is None else self._count_reject(*bad)
        if isinstance(msg, ModelMsg):
            if msg.base is not None and msg.base not in self.store:
                if (why := self._not_admissible(sender, msg)) is not None:
                    return why   # no base fetch for a stranger's model
                if (why := self.exchange.hold(msg)) is not None:
                    return self._count_reject(why, f"{self.exchange.pending_frames} frames wait for a base")
                task = self._spawn(self._receive_model(sender, msg))
                task.add_done_callback(lambda _: self.exchange.release(msg))
                return None
            return await self._receive_model(sender, msg)
        if (isinstance(msg, Advertise) and msg.status == Status.JOIN and sender not in self.core.view
                and not self.joins.allow(INBOUND_SOURCE.get(), self._now())):
            return self._count_reject("join_rate_limited", f"source {INBOUND_SOURCE.get()}")
        acts = self.core.handle(self._now(), sender, msg)
        self.driver.run(acts)
        return next((str(a.detail.get("reason")) for a in acts
                     if isinstance(a, act.Event) and a.kind == "rejected"), None)

    def _not_admissible(self, sender: bytes, msg: ModelMsg) -> str | None:
        """The core's walk-free role checks (not_member, round_out_of_range). On a rejection the
        core records (counts) it and may answer it (gossip mode: its advert, so the sender can join)."""
        why = self.core.admissible(sender, msg)
        if why is not None:
            self.driver.handle(sender, replace(msg, tensors=(), histories=(), sketches=None))
        return why

    async def _receive_model(self, sender: bytes, msg: ModelMsg) -> str | None:
        try:
            model, h = await self.exchange.verify(
                msg, lambda: self.send(sender, ModelRequest(msg.base)), self.current)
        except Rejected as e:
            return self._count_reject(e.reason, e.detail)
        if (why := self._not_admissible(sender, msg)) is not None:
            return why   # valid bytes, but no authority: nothing of it is stored
        # A lineage merge after a partition (SPEC 15.5) is exempt: the other part's model is worse
        # on our data by construction (each part trained apart), and it is merged, not adopted.
        if msg.kind == ModelKind.AGGREGATED and not self.core.would_merge(sender, msg.round, msg.model) and (
                why := await self.worker.worse_than(model, self.current)):
            reason = self._count_reject(WORSE_MODEL, why)   # a (member) aggregator's garbage
            if self.current and self.cfg.accept_quorum == 1 and msg.round <= self.core.round + 1:
                # The round goes on from the model we hold (SPEC section 15): a malicious
                # aggregator wastes its round, it cannot stop honest trainers.
                self.driver.handle(sender, replace(msg, model=self.current, tensors=(), histories=(), sketches=None))
            return reason
        if msg.histories and (why := self.histories.merge(sender, msg.histories)) is not None:
            return self._count_reject("bad_history", why)
        if msg.sketches and (why := self.histories.merge_table(sender, msg)) is not None:
            return self._count_reject("bad_history", why)
        self.store.put(model, h, parent=msg.base, delta=msg.tensors if msg.base else None)
        if msg.kind == ModelKind.TRAINED:
            self.telemetry.round(msg.round)["participants"].append(node_id(sender))
        self.driver.handle(sender, replace(msg, tensors=(), histories=(), sketches=None))
        return None

