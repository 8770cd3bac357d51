"""The membership view: pk -> (last active round, membership index, status, addresses)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Iterable

from .messages import Status, ViewRecord


@dataclass(frozen=True)
class Entry:
    last_active: int
    index: int
    status: Status
    addresses: tuple[str, ...] = ()


class View:
    def __init__(self) -> None:
        self._entries: dict[bytes, Entry] = {}
        self._max = 0   # max last_active: R reads it on every message, so keep it, not scan

    @property
    def entries(self) -> dict[bytes, Entry]:
        # Item assignments through this dict must not lower last_active (none do).
        return self._entries

    @entries.setter
    def entries(self, value: dict[bytes, Entry]) -> None:
        self._entries = value
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

    def merge(self, records: Iterable[ViewRecord]) -> None:
        """Add unknown peers; r_j = max of both; the membership entry with the higher index wins.

        (The reference implementation writes the index into the round slot here; we do not.)
        """
        for r in records:
            self.apply(r.peer, r.last_active, r.index, r.status, r.addresses)

    def records(self) -> tuple[ViewRecord, ...]:
        return tuple(
            ViewRecord(pk, e.last_active, e.index, e.status, e.addresses) for pk, e in self.entries.items()
        )

    def active(self, round_: int, tau: int, self_pk: bytes) -> list[bytes]:
        """A(k) = {j : status != LEAVE and r_j >= k - tau} plus self."""
        out = [
            pk for pk, e in self.entries.items()
            if e.status != Status.LEAVE and e.last_active >= round_ - tau and pk != self_pk
        ]
        out.append(self_pk)
        return out

    def max_round(self) -> int:
        return self._max
