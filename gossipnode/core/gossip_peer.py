"""Gossip learning for the daemon: GossipCore plus membership (bootstrap, addresses, view sharing).

Gives the runtime the same surface as ModestCore so one Node can run either protocol.
"""
from __future__ import annotations

import random

from .actions import Action, Send, SendTo
from .gossip import GossipConfig, GossipCore
from .messages import Advertise, ModelMsg, Status, ViewShare
from .view import View


class GossipPeerCore:
    def __init__(self, cfg: GossipConfig, self_pk: bytes, addresses: tuple[str, ...], initial_model: bytes,
                 rng: random.Random, index: int = 1) -> None:
        self.pk = self_pk
        self.addresses = addresses
        self.index = index
        self.view = View()
        self.gossip = GossipCore(cfg, self_pk, [], initial_model, rng)
        self.bootstrap: list[str] = []

    # -- the surface the runtime uses -------------------------------------------------------
    @property
    def round(self) -> int:
        return self.gossip.round

    def role(self) -> str:
        return {"merging": "aggregating", "training": "training"}.get(self.gossip.busy or "", "idle")

    def active(self, _k: int = 0) -> list[bytes]:
        return self.gossip.active_peers(self.gossip.now) + [self.pk]

    def address_of(self, pk: bytes) -> tuple[str, ...]:
        e = self.view.get(pk)
        return e.addresses if e else ()

    def next_deadline(self) -> float | None:
        return self.gossip.next_deadline()

    def start(self, now: float, bootstrap: list[str]) -> list[Action]:
        self.view.apply(self.pk, 0, self.index, Status.JOIN, self.addresses)
        self.bootstrap = [a for a in bootstrap if a not in self.addresses]
        adv = Advertise(0, self.index, Status.JOIN, self.addresses)
        return [SendTo(a, adv) for a in self.bootstrap] + self.gossip.start(now)

    def handle(self, now: float, sender: bytes, msg: object) -> list[Action]:
        out: list[Action] = []
        if isinstance(msg, Advertise):
            known = sender in self.view
            self.view.apply(sender, msg.round, msg.index, msg.status, msg.addresses)
            if msg.status == Status.JOIN and not known:
                out.append(Send(sender, ViewShare(self.round, self.view.records())))
        elif isinstance(msg, ViewShare):
            for r in msg.view:
                if r.peer != self.pk:
                    self.view.apply(r.peer, r.last_active, r.index, r.status, r.addresses)
                    if r.status == Status.JOIN:
                        self.gossip.add_peer(r.peer)
                    else:
                        self.gossip.remove_peer(r.peer)
            return out
        elif isinstance(msg, ModelMsg) and sender not in self.view:
            return out + [Send(sender, Advertise(self.round, self.index, Status.JOIN, self.addresses))] + \
                self.gossip.handle(now, sender, msg)
        return out + self.gossip.handle(now, sender, msg)

    def discovered(self, now: float, pk: bytes, addresses: tuple[str, ...]) -> list[Action]:
        """A transport found a peer (an MQTT announce): introduce ourselves with a JOIN advert."""
        if pk == self.pk or not addresses or pk in self.view:
            return []
        return [SendTo(addresses[0], Advertise(self.round, self.index, Status.JOIN, self.addresses))]

    def departed(self, now: float, pk: bytes) -> list[Action]:
        """A transport reports the peer gone (an MQTT last will): stop picking it until it speaks."""
        self.gossip.remove_peer(pk)
        self.view.entries.pop(pk, None)
        return []

    def tick(self, now: float) -> list[Action]:
        return self.gossip.tick(now)

    def merge_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        return self.gossip.merge_done(now, round_, model)

    def training_done(self, now: float, round_: int, model: bytes) -> list[Action]:
        return self.gossip.training_done(now, round_, model)

    def training_failed(self, now: float, round_: int, reason: str) -> list[Action]:
        return self.gossip.training_failed(now, round_, reason)

    def peer_failed(self, now: float, peer: bytes) -> list[Action]:
        return self.gossip.peer_failed(now, peer)

    def leave(self, now: float) -> list[Action]:
        self.index += 1
        return self.gossip.leave(now)
