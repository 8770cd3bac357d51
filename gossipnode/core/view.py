"""The membership view: pk -> (last active round, membership index, status, addresses).

Each entry keeps the peer's own signed record (`record`), which is what a node relays, verbatim.
`last_active` of the entry is local: the maximum of the record's claim and this node's own
evidence (a message received directly from the peer); local evidence is never relayed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from operator import attrgetter
from collections.abc import Iterable

from .messages import Status, ViewRecord
from .activeset import KEEP, ActiveSet
from .sampling import ordered, round_keys, sample


@dataclass(frozen=True, slots=True)
class Entry:
    last_active: int
    index: int
    status: Status
    addresses: tuple[str, ...] = ()
    record: ViewRecord | None = None   # the peer's signed record (relayed as is)


_LAST_ACTIVE = attrgetter("last_active")


class _Entries(dict):
    """A dict that counts its writes and logs them: callers assign items directly, and View's
    active sets (activeset.py) catch up from the log. log[i] names the key of write
    log_base + i + 1 and was[i] its entry's last_active before that write (None: absent or
    left), so a set need not keep its own members to know what changed. Writes without one key
    (clear, update, ...) restart the log."""
    __slots__ = ("version", "log", "was", "log_base")

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.version = self.log_base = 0
        self.log: list[bytes] = []
        self.was: list[int | None] = []

    def _wrote(self, k) -> None:
        e = dict.get(self, k)
        self.version += 1
        self.log.append(k)
        self.was.append(None if e is None or e.status == Status.LEAVE else e.last_active)
        if len(self.log) > len(self) // 2 + 64:   # bounded: a set this far behind rebuilds (as fast)
            self._restart()

    def _restart(self) -> None:
        self.log, self.was = [], []
        self.log_base = self.version

    def __setitem__(self, k, v) -> None:
        self._wrote(k)
        super().__setitem__(k, v)

    def __delitem__(self, k) -> None:
        self._wrote(k)
        super().__delitem__(k)

    def pop(self, k, *default):
        self._wrote(k)
        return dict.pop(self, k, *default)

    def _bump(name):   # noqa: N805 - builds the other mutators
        def f(self, *a, **kw):
            self.version += 1
            self._restart()
            return getattr(dict, name)(self, *a, **kw)
        return f

    popitem = _bump("popitem")
    clear = _bump("clear")
    update = _bump("update")
    setdefault = _bump("setdefault")
    del _bump


class View:
    def __init__(self) -> None:
        self._entries: dict[bytes, Entry] = _Entries()
        self._sets: dict[tuple, ActiveSet] = {}   # (round, tau, self) -> A(k), kept up to date
        self._max = 0   # max last_active: R reads it on every message, so keep it, not scan

    @property
    def entries(self) -> dict[bytes, Entry]:
        # Item assignments through this dict must not lower last_active (none do).
        return self._entries

    @entries.setter
    def entries(self, value: dict[bytes, Entry]) -> None:
        self._entries = _Entries(value)
        self._sets = {}
        self._max = max(map(_LAST_ACTIVE, value.values()), default=0)

    def __contains__(self, pk: bytes) -> bool:
        return pk in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, pk: bytes) -> Entry | None:
        return self.entries.get(pk)

    def bump(self, pk: bytes, round_: int) -> None:
        """r_j = max(r_j, round) for a known peer."""
        e = self.entries.get(pk)
        if e is not None and round_ > e.last_active:
            self.entries[pk] = replace(e, last_active=round_)
            self._max = max(self._max, round_)

    def apply(self, pk: bytes, round_: int, index: int, status: Status, addresses: tuple[str, ...] = ()) -> bool:
        """Apply a membership event; the higher index wins. Returns True if the entry changed."""
        self._max = max(self._max, round_)
        e = self.entries.get(pk)
        if e is None:
            self.entries[pk] = Entry(round_, index, status, addresses)
            return True
        new = e
        if round_ > e.last_active:
            new = replace(new, last_active=round_)
        if index > e.index:
            new = replace(new, index=index, status=status, addresses=addresses or e.addresses)
        elif not e.addresses and addresses:
            new = replace(new, addresses=addresses)
        self.entries[pk] = new
        return new != e

    def newer(self, rec: ViewRecord) -> bool:
        """Would `accept(rec)` change the entry? (Checked before paying for a verification.)"""
        e = self.entries.get(rec.peer)
        if e is None:
            return True
        if e.record is None:
            return rec.index >= e.index
        return rec.newer_than(e.record)

    def accept(self, rec: ViewRecord) -> bool:
        """Store a verified record if it is newer (higher (index, last_active)) than the held one."""
        if not self.newer(rec):
            return False
        e = self.entries.get(rec.peer)
        last = max(rec.last_active, e.last_active if e is not None else 0)
        self.entries[rec.peer] = Entry(last, rec.index, rec.status, rec.addresses, rec)
        self._max = max(self._max, last)
        return True

    def merge(self, records: Iterable[ViewRecord]) -> None:
        """Unverified merge (tests and tools only; the cores verify and use `accept`): add unknown
        peers; r_j = max of both; the membership entry with the higher index wins."""
        for r in records:
            self.apply(r.peer, r.last_active, r.index, r.status, r.addresses)

    def records(self) -> tuple[ViewRecord, ...]:
        """The signed records to relay (entries without one, e.g. from `apply`, are not relayed)."""
        return tuple(e.record for e in self.entries.values() if e.record is not None)

    def _set(self, round_: int, tau: int, self_pk: bytes) -> ActiveSet:
        key = (round_, tau, self_pk)
        c = self._sets.get(key)
        if c is None or not c.catch_up(self._entries):
            c = ActiveSet(self._entries, round_, tau, self_pk)
        self._sets.pop(key, None)
        self._sets[key] = c   # the most recent last
        if len(self._sets) > KEEP:
            del self._sets[next(iter(self._sets))]
        return c

    def active(self, round_: int, tau: int, self_pk: bytes) -> list[bytes]:
        """A(k) = {j : status != LEAVE and r_j >= k - tau} plus self (a fresh list: callers append;
        its order is not the sample order and callers must not depend on it)."""
        return self._set(round_, tau, self_pk).active()

    def order(self, round_: int, tau: int, self_pk: bytes) -> list[bytes]:
        """sample_order(A(k), k) (a fresh list: walks keep theirs)."""
        return self._set(round_, tau, self_pk).order()

    def ahead(self, round_: int, tau: int, self_pk: bytes, pk: bytes) -> list[bytes]:
        """The members of A(k) before `pk` in sample_order(A(k) + pk, k)."""
        return self._set(round_, tau, self_pk).ahead(pk)

    def sample(self, round_: int, tau: int, self_pk: bytes, n: int) -> list[bytes]:
        """The first n of order(k), i.e. sample(active(k), k, n), found by walking the round's
        process-wide order (sampling.ordered) and testing each peer's entry: about n steps when
        A(k) is most of the view, instead of building A(k) from all N entries."""
        ents = self._entries
        round_keys(round_, (self_pk,))
        order = ordered(round_, ents.keys())
        if self_pk not in round_keys(round_, ()) or len(order) > 4 * len(ents) + 64:   # memo started over; a small view
            return sample(self.active(round_, tau, self_pk), round_, n)
        floor, leave, get = round_ - tau, Status.LEAVE, ents.get
        out: list[bytes] = []
        for pk in order:
            if len(out) >= n:
                break
            if pk == self_pk:
                out.append(pk)
            else:
                e = get(pk)
                if e is not None and e.last_active >= floor and e.status != leave:
                    out.append(pk)
        return out

    def size_hint(self) -> int:
        """|A(k)| as last built (the view's size, if none was): an estimate."""
        if self._sets:
            return len(next(reversed(self._sets.values())).members) + 1
        return len(self._entries)

    def max_round(self) -> int:
        return self._max
