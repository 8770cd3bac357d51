"""Gossip learning for the daemon and the simulator: GossipCore plus membership (bootstrap,
addresses, view sharing). Implements `core.interface.ProtocolCore`, as ModestCore does.
"""
from __future__ import annotations

import random

from .actions import Action, Event, Send, SendTo
from .auth import DigestAuth, RecordAuth
from .gossip import GossipConfig, GossipCore
from .messages import Advertise, ModelMsg, Status, ViewRecord, ViewShare
from .view import Entry, View


class GossipPeerCore:
    def __init__(self, cfg: GossipConfig, self_pk: bytes, addresses: tuple[str, ...], initial_model: bytes,
                 rng: random.Random, index: int = 1, auth: RecordAuth | None = None,
                 max_peers: int = 10_000, pow_nonce: int = 0) -> None:
        self.pk = self_pk
        self.pow_nonce = pow_nonce
        self.auth: RecordAuth = auth if auth is not None else DigestAuth()
        self.max_peers = max_peers
        self.status = Status.JOIN
        self.addresses = addresses
        self.index = index
        self.view = View()
        self.gossip = GossipCore(cfg, self_pk, [], initial_model, rng)
        self.bootstrap: list[str] = []
        self.unreachable: dict[bytes, float] = {}   # not tracked in gossip mode (ProtocolCore)
        self._introduced: set[tuple[bytes, int]] = set()

    # -- the surface the runtime uses -------------------------------------------------------
    @property
    def round(self) -> int:
        return self.gossip.round

    def role(self) -> str:
        return {"merging": "aggregating", "training": "training"}.get(self.gossip.busy or "", "idle")

    def active(self, _k: int = 0) -> list[bytes]:
        return self.gossip.active_peers(self.gossip.now) + [self.pk]

    def admissible(self, sender: bytes, msg: ModelMsg) -> str | None:
        """Checked by the runtime before it stores anything for a MODEL (SPEC 15.3)."""
        return None if self.is_member(sender) else "not_member"

    def is_member(self, pk: bytes) -> bool:
        e = self.view.get(pk)
        return e is not None and e.status != Status.LEAVE

    def address_of(self, pk: bytes) -> tuple[str, ...]:
        e = self.view.get(pk)
        return e.addresses if e else ()

    def next_deadline(self) -> float | None:
        return self.gossip.next_deadline()

    def own_record(self) -> ViewRecord:
        e = self.view.get(self.pk)
        r = e.record if e is not None else None
        if r is None or r.index != self.index or r.status != self.status or r.addresses != self.addresses:
            r = self.auth.sign(ViewRecord(self.pk, self.round, self.index, self.status, self.addresses,
                                          pow=self.pow_nonce))
            self.view.entries[self.pk] = Entry(r.last_active, r.index, r.status, r.addresses, r)
        return r

    def _advert(self) -> Advertise:
        return Advertise.of(self.own_record())

    def start(self, now: float, bootstrap: list[str]) -> list[Action]:
        self.bootstrap = [a for a in bootstrap if a not in self.addresses]
        adv = self._advert()
        return [SendTo(a, adv) for a in self.bootstrap] + self.gossip.start(now)

    def _take(self, rec: ViewRecord, out: list[Action]) -> bool:
        """A record signed by its peer: per peer the one with the highest (index, last_active)."""
        if rec.peer == self.pk or not self.view.newer(rec):
            return False
        if rec.peer not in self.view and len(self.view) >= self.max_peers:
            out.append(Event(self.round, "rejected", {"reason": "view_full"}))
            return False
        if not self.auth.verify(rec):
            out.append(Event(self.round, "rejected", {"reason": "bad_record_sig", "peer": rec.peer.hex()[:16]}))
            return False
        self.view.accept(rec)
        if rec.status == Status.JOIN:
            self.gossip.add_peer(rec.peer)
        else:
            self.gossip.remove_peer(rec.peer)
        return True

    def handle(self, now: float, sender: bytes, msg: object) -> list[Action]:
        out: list[Action] = []
        if isinstance(msg, Advertise):
            known = sender in self.view
            rec = msg.record(sender)
            if self.view.newer(rec) and not self._take(rec, out):
                return out
            if msg.status == Status.JOIN and not known:
                out.append(Send(sender, ViewShare(self.round, self.view.records())))
            elif msg.status == Status.JOIN and (sender, msg.index) not in self._introduced:
                # A known peer's JOIN advert may mean that it does not know us (it rejected our
                # model as not_member and sent its advert): introduce ourselves, once per session.
                self._introduced.add((sender, msg.index))
                out.append(Send(sender, self._advert()))
            return out
        elif isinstance(msg, ViewShare):
            for r in msg.view:
                if self.view.newer(r) and r.peer != self.pk and not self._take(r, out) and out:
                    break   # the first bad record ends the merge
            return out
        elif isinstance(msg, ModelMsg) and not self.is_member(sender):
            # Only members' models are merged (SPEC 15.3); a peer that knows us but that we do not
            # know gets our advert, so it can join (its JOIN advert makes it a member).
            return out + [Send(sender, self._advert()),
                          Event(self.round, "rejected", {"reason": "not_member", "sender": sender.hex()[:16],
                                                         "model_kind": msg.kind.name.lower()})]
        return out + self.gossip.handle(now, sender, msg)

    def discovered(self, now: float, pk: bytes, addresses: tuple[str, ...]) -> list[Action]:
        """A transport found a peer (an MQTT announce): introduce ourselves with a JOIN advert."""
        if pk == self.pk or not addresses or pk in self.view:
            return []
        return [SendTo(addresses[0], self._advert())]

    def departed(self, now: float, pk: bytes) -> list[Action]:
        """A transport reports the peer gone (an MQTT last will): stop picking it until it speaks."""
        self.gossip.remove_peer(pk)
        self.view.entries.pop(pk, None)
        return []

    def tick(self, now: float) -> list[Action]:
        return self.gossip.tick(now)

    def merge_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        return self.gossip.merge_done(now, round_, model)

    def aggregation_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        return []   # gossip learning merges (Merge / merge_done); it never asks to aggregate

    def would_merge(self, sender: bytes, k: int, model: bytes) -> bool:
        return False   # every received model is merged with weight --beta, never adopted whole

    def training_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        return self.gossip.training_done(now, round_, model)

    def training_failed(self, now: float, round_: int, reason: str) -> list[Action]:
        return self.gossip.training_failed(now, round_, reason)

    def peer_failed(self, now: float, peer: bytes) -> list[Action]:
        return self.gossip.peer_failed(now, peer)

    def leave(self, now: float) -> list[Action]:
        """GossipCore's LEAVE adverts, made the sender's own signed record."""
        self.index += 1
        self.status = Status.LEAVE
        adv = self._advert()
        return [Send(a.peer, adv) if isinstance(a, Send) and isinstance(a.msg, Advertise) else a
                for a in self.gossip.leave(now)]
