"""A(k) and its sample order, kept up to date from the view's change log instead of rebuilt.

Every message that changes a view changes a few entries, and role checks then ask for A(k) and
order(k). Rebuilding both per view version was O(N) (O(N log N) for the order) per message, a
fifth of a 3,000-node simulation (RESULTS 5.1). Here each (round, tau, self) key keeps its members
and their order; on the next call only the peers written since (the log of `_Entries`) are
looked at again, and each is put in or taken out of the sorted order by bisection.
Memory: two lists of N references per set (what the rebuilt lists cost); membership before a
write comes from the log, not from a per-set dict (at 5,000 simulated nodes, 5,000 views).
Sans-I/O; used by view.py only.
"""
from __future__ import annotations

from bisect import bisect_left

from .messages import Status
from .sampling import round_keys

KEEP = 4   # (round, tau, self) keys kept: role checks ask for R, R - 1 and R + 1


class ActiveSet:
    __slots__ = ("round", "tau", "me", "version", "members", "_pks", "_rkeys")

    def __init__(self, entries, round_: int, tau: int, me: bytes) -> None:
        self.round, self.tau, self.me = round_, tau, me
        self.version = entries.version
        floor, leave = round_ - tau, Status.LEAVE
        self.members = [pk for pk, e in entries.items() if e.last_active >= floor and e.status != leave and pk != me]
        self._pks: list[bytes] | None = None   # the sample order, built on first use
        self._rkeys: dict[bytes, bytes] = {}

    def _inside(self, la: int | None) -> bool:
        return la is not None and la >= self.round - self.tau

    def catch_up(self, entries) -> bool:
        """Apply the writes since `version`; False when the log no longer reaches back that far."""
        if self.version == entries.version:
            return True
        start = self.version - entries.log_base
        if start < 0:
            return False
        seen: set[bytes] = set()
        leave = Status.LEAVE
        for pk, was in zip(entries.log[start:], entries.was[start:]):
            if pk in seen or pk == self.me:
                continue
            seen.add(pk)   # its first write since `version` says whether it was a member then
            e = entries.get(pk)
            now = self._inside(None if e is None or e.status == leave else e.last_active)
            if now and not self._inside(was):
                self.members.append(pk)
                if self._pks is not None:
                    self._pks.insert(self._at(pk), pk)
            elif not now and self._inside(was):
                self.members.remove(pk)   # rare (a leave, a deletion): a C-speed scan
                if self._pks is not None:
                    del self._pks[self._at(pk)]
        self.version = entries.version
        return True

    def active(self) -> list[bytes]:
        out = list(self.members)
        out.append(self.me)   # A(k) always holds self
        return out

    def _key(self, pk: bytes) -> bytes:
        k = self._rkeys.get(pk)
        if k is None:
            k = round_keys(self.round, [pk])[pk]
        return k

    def _at(self, pk: bytes) -> int:
        """pk's place in the order: the order's keys are not kept, one list of N is enough."""
        return bisect_left(self._order(), self._key(pk), key=self._key)

    def _order(self) -> list[bytes]:
        if self._pks is None:
            pks = self.active()
            self._rkeys = keys = round_keys(self.round, pks)
            pks.sort(key=keys.__getitem__)
            self._pks = pks
        return self._pks

    def order(self) -> list[bytes]:
        return list(self._order())

    def ahead(self, pk: bytes) -> list[bytes]:
        """The members before `pk` in the order (pk need not be one)."""
        pks = self._order()
        return pks[: bisect_left(pks, self._key(pk), key=self._key)]
