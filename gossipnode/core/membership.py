"""Membership of the MoDeST core (SPEC 4, 8-11 and 15): this node's signed record, relayed
records and adverts, joiners probed at their signed address before they enter the view,
peers a transport reports found or gone, the bootstrap phase, and the bounds on the view,
pending joins and JOIN adverts.

A mixin of ModestCore (modest.py): it shares the core's state and uses its `_send`,
`_event`, `_reject`, `round`, `_cap` and `rv`. Sans-I/O like the rest of core/.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .actions import Action, SendTo
from .auth import pow_bits
from .messages import Advertise, Ping, Status, ViewRecord, ViewShare
from .view import Entry


_MEMO = 4096           # bound of the small per-key memories (rate limit, unreachable joiners)


@dataclass
class _Join:
    """A joiner being probed: it enters the view only once it answered a ping at its signed address."""
    record: ViewRecord
    via_advert: bool     # its own JOIN advert (then: applied after our next model send, sent our view)
    nonce: int           # unpredictable, so only a node reached at that address can answer
    first_sent: float
    last_sent: float
    reached: bool = False


class Membership:
    def _init_membership(self) -> None:
        self.pending: dict[bytes, _Join] = {}
        self.status = Status.JOIN
        self._own: ViewRecord | None = None      # this node's signed record, re-signed on change
        self._advert_at: dict[bytes, float] = {}   # JOIN adverts of non-members: one per ping_interval
        self._unreachable: dict[bytes, tuple[int, int]] = {}   # probed in vain: record (index, last_active)
        self._boot_claim: dict[bytes, int] = {}  # VIEW rounds of senders that name a bootstrap address
        self._boot_peers: set[bytes] = set()     # reached at a bootstrap address
        self._reply_to: dict[bytes, tuple[str, ...]] = {}   # signed addresses of pinging strangers
        self.gone: dict[bytes, int] = {}   # peers marked LEAVE by `departed` -> their index then

    def own_record(self) -> ViewRecord:
        """This node's signed record. Re-signed when index, status or addresses change, or when R
        ran a quarter of tau past the signed last_active (its claim stays fresh enough to keep it
        active everywhere, and a view of 1,000 peers does not change every round)."""
        o = self._own
        r = self.round
        step = max(1, self.cfg.inactivity_threshold // 4)
        if (o is None or o.index != self.index or o.status != self.status or o.addresses != self.addresses
                or r >= o.last_active + step):
            o = self.auth.sign(ViewRecord(self.pk, r, self.index, self.status, self.addresses, pow=self.pow_nonce))
            self._own = o
            e = self.view.get(self.pk)
            self.view.entries[self.pk] = Entry(max(o.last_active, e.last_active if e else 0), o.index,
                                               o.status, o.addresses, o)
        return o

    def _advert(self) -> Advertise:
        return Advertise.of(self.own_record())

    def address_of(self, pk: bytes) -> tuple[str, ...]:
        e = self.view.get(pk)
        if e is not None and e.addresses:
            return e.addresses
        p = self.pending.get(pk)
        if p is not None:
            return p.record.addresses
        return self._reply_to.get(pk, ())

    def is_member(self, pk: bytes) -> bool:
        e = self.view.get(pk)
        if e is not None and e.status != Status.LEAVE:
            return True
        j = self.pending.get(pk)   # a joiner counts once it answered a ping at its signed address
        return j is not None and j.reached

    def _bump(self, pk: bytes, round_: int) -> None:
        if pk != self.pk:
            self.view.bump(pk, round_)

    def _accept(self, rec: ViewRecord) -> bool:
        """Store a verified record; a peer marked gone (`departed`) stays LEAVE at that index."""
        if not self.view.accept(rec):
            return False
        idx = self.gone.get(rec.peer)
        if idx is not None:
            if rec.index == idx:
                e = self.view.entries[rec.peer]
                self.view.entries[rec.peer] = Entry(e.last_active, e.index, Status.LEAVE, e.addresses, e.record)
            else:
                self.gone.pop(rec.peer, None)
        return True

    def _take_records(self, records: Iterable[ViewRecord]) -> None:
        """Merge relayed records: per peer the valid record with the highest (index, last_active).
        Records that would change nothing are not verified; unknown peers are probed first
        (pending). The first bad signature ends the merge (honest nodes relay only valid records)."""
        full = pending_full = no_pow = 0
        inactive_below = self.round - self.cfg.inactivity_threshold
        for rec in records:
            pk = rec.peer
            if pk == self.pk:
                continue
            if pk in self.view.entries:
                if not self.view.newer(rec):
                    continue
                if not self.auth.verify(rec):
                    self._reject(self.round, "bad_record_sig", peer=pk.hex()[:16])
                    break
                self._accept(rec)
                continue
            if rec.status != Status.JOIN or rec.last_active < inactive_below:
                continue   # nothing to learn from a departed or long-silent stranger
            j = self.pending.get(pk)
            if j is not None:
                if rec.newer_than(j.record):
                    if not self.auth.verify(rec):
                        self._reject(self.round, "bad_record_sig", peer=pk.hex()[:16])
                        break
                    j.record = rec
                continue
            if self._unreachable.get(pk, (-1, -1)) >= (rec.index, rec.last_active):
                continue   # probed in vain already; only a newer record earns a new probe
            if len(self.view) >= self.cfg.max_peers:
                full += 1
                continue
            if len(self.pending) >= self.cfg.max_pending:
                pending_full += 1
                continue
            if not self._pow_ok(rec):
                no_pow += 1
                continue
            if not self.auth.verify(rec):
                self._reject(self.round, "bad_record_sig", peer=pk.hex()[:16])
                break
            self._add_pending(rec, via_advert=False)
        if full:
            self._reject(self.round, "view_full", count=full)
        if pending_full:
            self._reject(self.round, "pending_full", count=pending_full)
        if no_pow:
            self._reject(self.round, "insufficient_pow", count=no_pow)

    def _pow_ok(self, rec: ViewRecord) -> bool:
        """--join-pow: a new member's key must carry that much work (one hash to check)."""
        return self.cfg.join_pow == 0 or pow_bits(rec.peer, rec.pow) >= self.cfg.join_pow

    def _add_pending(self, rec: ViewRecord, via_advert: bool) -> None:
        """Probe a joiner at its signed address; it joins only on a PONG with our nonce."""
        j = self.pending.get(rec.peer)
        if j is not None:
            if rec.newer_than(j.record):
                j.record = rec
            j.via_advert = j.via_advert or via_advert
            return
        if len(self.view) >= self.cfg.max_peers:
            self._reject(self.round, "view_full", peer=rec.peer.hex()[:16])
            return
        if len(self.pending) >= self.cfg.max_pending:
            self._reject(self.round, "pending_full", peer=rec.peer.hex()[:16])
            return
        j = _Join(rec, via_advert, self._secret.getrandbits(62), self.now, self.now)
        self.pending[rec.peer] = j
        self._event(self.round, "peer_join_pending", peer=rec.peer.hex()[:16])
        self._send(rec.peer, Ping(self.round, j.nonce, self.own_record()))

    def _reached(self, pk: bytes, j: _Join) -> None:
        j.reached = True
        if any(a in self.bootstrap for a in j.record.addresses):
            self._boot_peers.add(pk)
            claim = self._boot_claim.pop(pk, None)
            if claim is not None:
                self._verified_by_boot(pk, claim)
        # Before round 1 nobody is in a sample yet, so a join can apply at once; so can a peer
        # learned from views (it joined elsewhere already). Others wait for our next model send.
        if not j.via_advert or self.round == 0:
            self.pending.pop(pk, None)
            self._accept(j.record)
        if j.via_advert:
            self._send(pk, ViewShare(self.round, self.view.records()))

    def _verified_by_boot(self, pk: bytes, k: int) -> None:
        """A bootstrap peer told us the network's round: our record's claim jumps with it, so send
        the re-signed record back (the one it holds says round 0, which others would ignore)."""
        before = self.own_record()
        self.note_verified(k)
        if self.own_record() is not before:
            self._send(pk, self._advert())

    def _probe_tick(self, now: float) -> None:
        for pk, j in list(self.pending.items()):
            if j.reached:
                continue
            if now >= j.first_sent + self.cfg.ping_timeout:
                del self.pending[pk]
                self._remember(self._unreachable, pk, (j.record.index, j.record.last_active))
                self._event(self.round, "join_unreachable", peer=pk.hex()[:16])
            elif now >= j.last_sent + self._probe_interval():
                j.last_sent = now
                self._send(pk, Ping(self.round, j.nonce, self.own_record()))

    def _probe_interval(self) -> float:
        # A probe is pinged twice at most: a flood of unreachable joiners costs few requests.
        return max(self.cfg.ping_interval, self.cfg.ping_timeout / 2)

    @staticmethod
    def _remember(memo: dict, key: bytes, value) -> None:
        memo.pop(key, None)
        memo[key] = value
        while len(memo) > _MEMO:
            memo.pop(next(iter(memo)))

    def _apply_pending(self) -> None:
        """Joins wait until after this node's next model send, so a joiner misses one sample
        (and until the joiner answered our probe)."""
        for pk, j in list(self.pending.items()):
            if j.reached:
                del self.pending[pk]
                self._accept(j.record)

    def _on_advertise(self, sender: bytes, msg: Advertise) -> None:
        """An ADVERTISE is the sender's own signed record."""
        if sender == self.pk:
            return
        if msg.round > self._cap():
            self._reject(self.round, "round_out_of_range", round=msg.round, type="advertise")
            return
        rec = msg.record(sender)
        e = self.view.get(sender)
        j = self.pending.get(sender)
        if msg.status == Status.JOIN and e is None and j is None:
            t = self._advert_at.get(sender)
            if t is not None and self.now - t < 0.9 * self.cfg.ping_interval:   # 10 % for jitter
                self._reject(self.round, "join_rate_limited", peer=sender.hex()[:16])
                return
            # pow and caps before the signature: a flood of fresh keys costs no verification once
            # full. The per-key limit counts adverts turned away here and validly signed ones.
            why = ("insufficient_pow" if not self._pow_ok(rec) else "view_full" if len(self.view) >= self.cfg.max_peers
                   else "pending_full" if len(self.pending) >= self.cfg.max_pending else None)
            if why is not None:
                self._remember(self._advert_at, sender, self.now)
                self._reject(self.round, why, peer=sender.hex()[:16])
                return
        newer = self.view.newer(rec) if e is not None else (j is None or rec.newer_than(j.record))
        if newer and not self.auth.verify(rec):
            self._reject(self.round, "bad_record_sig", peer=sender.hex()[:16], type="advertise")
            return
        if msg.status == Status.LEAVE:
            self.pending.pop(sender, None)
            if e is not None and self._accept(rec):
                self._event(self.round, "peer_left", peer=sender.hex()[:16])
            return
        if e is not None:
            # A member re-signed only its last_active (a joiner that learnt the round): no view back.
            refresh = e.record is not None and rec.index == e.record.index and rec.last_active > e.record.last_active
            self._accept(rec)
            if not refresh:
                self._send(sender, ViewShare(self.round, self.view.records()))
            return
        if j is not None:
            if newer:
                j.record = rec
            j.via_advert = True
            return
        self._remember(self._advert_at, sender, self.now)
        self._add_pending(rec, via_advert=True)

    def _on_viewshare(self, sender: bytes, msg: ViewShare) -> None:
        """A VIEW answer. Its round is hearsay (bounded by the window), except from a bootstrap
        peer reached at its bootstrap address: a joiner must learn the network's round."""
        own = next((r for r in msg.view if r.peer == sender), None)
        boot = own is not None and any(a in self.bootstrap for a in own.addresses)
        if msg.round > self._cap() and not boot:
            self._reject(self.round, "round_out_of_range", round=msg.round, type="view")
            return
        self._take_records(msg.view)
        if boot and msg.round > self.rv():
            if sender in self._boot_peers:
                self._verified_by_boot(sender, msg.round)
            elif len(self._boot_claim) < 64 or sender in self._boot_claim:
                self._boot_claim[sender] = max(msg.round, self._boot_claim.get(sender, 0))
        self._bump(sender, min(msg.round, self._cap()))

    def _ping_record(self, sender: bytes, rec: ViewRecord | None) -> bool:
        """A PING carries the pinger's own record: a member's may update our view; a stranger's
        (e.g. a node probing us as a joiner) only tells where to send the PONG."""
        if rec is None:
            return True
        if rec.peer != sender:
            self._reject(self.round, "bad_record_sig", peer=rec.peer.hex()[:16], why="not the sender's")
            return False
        if sender in self.view.entries or sender in self.pending:
            self._take_records((rec,))
        elif sender not in self._reply_to or self._reply_to[sender] != rec.addresses:
            if not self.auth.verify(rec):
                self._reject(self.round, "bad_record_sig", peer=sender.hex()[:16], type="ping")
                return False
            self._remember(self._reply_to, sender, rec.addresses)
        return True

    def discovered(self, now: float, pk: bytes, addresses: tuple[str, ...]) -> list[Action]:
        """A transport found a peer (e.g. an MQTT retained announce): contact it like a bootstrap
        peer with a JOIN advert. Only a hint: the peer enters the view when it answers. During
        the bootstrap phase, round 1 also waits (up to bootstrap_timeout) until it is known."""
        self.now = now
        e = self.view.get(pk)
        if pk == self.pk or self.finished or not addresses or (e is not None and e.status == Status.JOIN):
            return self._flush()
        addr = addresses[0]
        if self._bootstrapping() and addr not in self.bootstrap:
            self.bootstrap.append(addr)
        self._out.append(SendTo(addr, self._advert()))
        return self._flush()

    def departed(self, now: float, pk: bytes) -> list[Action]:
        """A transport reports that a peer is gone (e.g. an MQTT last will): mark it LEAVE at its
        current membership index, so any later JOIN from it (a higher index) wins again."""
        self.now = now
        e = self.view.get(pk)
        self.pending.pop(pk, None)
        if pk != self.pk and e is not None and e.status != Status.LEAVE:
            self.view.entries[pk] = Entry(e.last_active, e.index, Status.LEAVE, e.addresses)
            self.gone[pk] = e.index
            self._event(self.round, "peer_gone", peer=pk.hex()[:16])
        return self._flush()

    def _revive(self, pk: bytes) -> None:
        """A signed message from a peer marked gone by `departed` proves it is alive (e.g. the
        broker, not the peer, went away and published its will): undo the mark."""
        idx = self.gone.pop(pk, None)
        e = self.view.get(pk)
        if idx is not None and e is not None and e.status == Status.LEAVE and e.index == idx:
            self.view.entries[pk] = Entry(e.last_active, e.index, Status.JOIN, e.addresses)
            self._event(self.round, "peer_back", peer=pk.hex()[:16])

    def leave(self, now: float) -> list[Action]:
        """Graceful leave: a LEAVE advert to `s` random known peers."""
        self.now = now
        self.index += 1
        self.status = Status.LEAVE
        adv = self._advert()
        peers = sorted(pk for pk in self.active(self.round) if pk != self.pk)
        self.rng.shuffle(peers)
        for pk in peers[: self.cfg.sample_size]:
            self._send(pk, adv)
        self.finished = True
        self.walks.clear()
        self.retries.clear()
        return self._flush()

    def _known_addresses(self) -> set[str]:
        # O(view): only while bootstrap addresses are still to be found (none: a pre-bootstrapped
        # simulator node, which must not pay N per node at start-up)
        return {a for e in self.view.entries.values() for a in e.addresses} if self.bootstrap else set()

    def _advertise_bootstrap(self, now: float) -> None:
        known = self._known_addresses()
        adv = self._advert()
        for addr in self.bootstrap:
            if addr not in known:
                self._out.append(SendTo(addr, adv))
        self.bootstrap_next = now + self.cfg.ping_interval

    def _bootstrapping(self) -> bool:
        """The bootstrap phase: started, never trained, and no evidence that round 1's training
        is over (R_v <= 2: round 1's trainers send TRAINED(2), and round 2's model does not
        exist yet). Not R == 0: a node that started late hears of rounds 1 and 2 in the
        others' records and pings, or is sent TRAINED(2) as an aggregator, before its own
        bootstrap_wait is over; if it is in round 1's sample, the aggregators wait for its
        update. A joiner learns R_v (the network's round) from its bootstrap peers' VIEW."""
        return (self.started and self.train_idx == 0 and self.rv() <= 2 and self.model_round < 2
                and not self.finished)

    def _bootstrap_tick(self, now: float) -> None:
        if now < self.bootstrap_next:
            return
        known = self._known_addresses()
        all_known = all(a in known for a in self.bootstrap)
        waited = now - self.start_time
        # once round 1 has begun elsewhere there is nothing more to wait for than the peers
        if (all_known and (waited >= self.cfg.bootstrap_wait or self.round >= 1)) \
                or waited >= self.cfg.bootstrap_timeout:
            self.started = False  # bootstrap phase over
            if self.pk in self.sample(1):
                self._event(1, "start", peers=len(self.view) - 1)
                self._on_aggregated(1, self.initial_model, self.pk)
            return
        self._advertise_bootstrap(now)
