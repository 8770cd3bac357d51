"""The membership view: pk -> (last active round, membership index, status, addresses).

Each entry keeps the peer's own signed record (`record`), which is what a node relays, verbatim.
`last_active` of the entry is local: the maximum of the record's claim and this node's own
evidence (a message received directly from the peer); local evidence is never relayed.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Iterable

from .messages import Status, ViewRecord
from .sampling import sample_order


@dataclass(frozen=True)
class Entry:
    last_active: int
    index: int
    status: Status
    addresses: tuple[str, ...] = ()
    record: ViewRecord | None = None   # the peer's signed record (relayed as is)


class _Entries(dict):
    """A dict that counts its writes: callers assign items directly, and View's caches key on
    the count."""
    __slots__ = ("version",)

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.version = 0

    def __setitem__(self, k, v) -> None:
        self.version += 1
        super().__setitem__(k, v)

    def __delitem__(self, k) -> None:
        self.version += 1
        super().__delitem__(k)

    def _bump(name):   # noqa: N805 - builds the other mutators
        def f(self, *a, **kw):
            self.version += 1
            return getattr(dict, name)(self, *a, **kw)
        return f

    pop = _bump("pop")
    popitem = _bump("popitem")
    clear = _bump("clear")
    update = _bump("update")
    setdefault = _bump("setdefault")
    del _bump


class View:
    def __init__(self) -> None:
        self._entries: dict[bytes, Entry] = _Entries()
        self._active: tuple | None = None   # (key, list): role checks ask A(k) many times per round
        self._order: tuple | None = None    # (key, list): sample_order of that A(k)
        self._max = 0   # max last_active: R reads it on every message, so keep it, not scan

    @property
    def entries(self) -> dict[bytes, Entry]:
        # Item assignments through this dict must not lower last_active (none do).
        return self._entries

    @entries.setter
    def entries(self, value: dict[bytes, Entry]) -> None:
        self._entries = _Entries(value)
        self._active = self._order = None   # a new dict may reuse a freed one's id
        self._max = max((e.last_active for e in value.values()), default=0)

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

    def active(self, round_: int, tau: int, self_pk: bytes) -> list[bytes]:
        """A(k) = {j : status != LEAVE and r_j >= k - tau} plus self (a fresh list: callers append)."""
        key = (round_, tau, self_pk, self._entries.version, id(self._entries))
        c = self._active
        if c is not None and c[0] == key:
            return list(c[1])
        out = [
            pk for pk, e in self.entries.items()
            if e.status != Status.LEAVE and e.last_active >= round_ - tau and pk != self_pk
        ]
        out.append(self_pk)
        self._active = (key, out)
        return list(out)

    def order(self, round_: int, tau: int, self_pk: bytes) -> list[bytes]:
        """sample_order(A(k), k), cached like `active` (a fresh list: walks keep theirs)."""
        key = (round_, tau, self_pk, self._entries.version, id(self._entries))
        c = self._order
        if c is None or c[0] != key:
            c = self._order = (key, sample_order(self.active(round_, tau, self_pk), round_))
        return list(c[1])

    def max_round(self) -> int:
        return self._max
