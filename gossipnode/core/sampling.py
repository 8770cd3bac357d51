"""Deterministic MoDeST sample order: every node with the same view computes the same order.

The order keys of a round are memoised, process-wide, for the last few rounds: all nodes of a
simulation (and one node's many walks and role checks) sort the same peers for the same round,
so each (peer, round) key is hashed once and the sort compares cached bytes in C."""
from __future__ import annotations

import hashlib
import heapq
from bisect import insort
from collections import OrderedDict
from collections.abc import Iterable

KEEP_ROUNDS = 8           # rounds whose keys are kept
MAX_KEYS = 1 << 20        # keys kept in all (a bound on memory: about 100 MB at most)

_keys: OrderedDict[int, dict[bytes, bytes]] = OrderedDict()   # round -> pk -> order key
_n_keys = 0
_KeysView = type({}.keys())
_sorted: dict[int, tuple[dict, list[bytes]]] = {}   # round -> (its memo, the memo's pks in order)


def order_key(pk: bytes, round_: int) -> bytes:
    """sha256(public_key || round as 8-byte big-endian): written into protocol/SPEC.md."""
    return hashlib.sha256(pk + round_.to_bytes(8, "big")).digest()


def _round_keys(round_: int) -> dict[bytes, bytes]:
    global _n_keys
    keys = _keys.get(round_)
    if keys is None:
        keys = _keys[round_] = {}
        while len(_keys) > KEEP_ROUNDS:
            _n_keys -= len(_keys.popitem(last=False)[1])
    else:
        _keys.move_to_end(round_)
    return keys


def round_keys(round_: int, cands: Iterable[bytes]) -> dict[bytes, bytes]:
    """The memo of `round_`, holding the keys of `cands` (a dict: pk -> order key)."""
    global _n_keys
    keys = _round_keys(round_)
    if isinstance(cands, _KeysView):   # a view's entries: dict key views subtract in C
        missing = cands - keys.keys()
    else:
        if not isinstance(cands, set):
            cands = set(cands)
        missing = cands.difference(keys)   # in C: set minus dict keys
    if missing:
        if _n_keys + len(missing) > MAX_KEYS:   # a flood of made-up peers: start over
            _keys.clear()
            _n_keys = 0
            keys = _round_keys(round_)
            missing = set(cands)
        r = round_.to_bytes(8, "big")
        sha = hashlib.sha256
        for pk in missing:
            keys[pk] = sha(pk + r).digest()
        _n_keys += len(missing)
    return keys


def _keyed(candidates: Iterable[bytes], round_: int) -> tuple[set[bytes], dict[bytes, bytes]]:
    cands = set(candidates)
    return cands, round_keys(round_, cands)


def sample_order(candidates: Iterable[bytes], round_: int) -> list[bytes]:
    cands, keys = _keyed(candidates, round_)
    return sorted(cands, key=keys.__getitem__)


def sample(candidates: Iterable[bytes], round_: int, size: int) -> list[bytes]:
    """The first `size` of sample_order (keys are distinct digests: the same list), without
    sorting all candidates."""
    cands, keys = _keyed(candidates, round_)
    return heapq.nsmallest(size, cands, key=keys.__getitem__)


def ordered(round_: int, pks: Iterable[bytes]) -> list[bytes]:
    """Every pk memoised for `round_` (`pks` added first), in sample order: filtering this list
    gives the sample order of any subset of it, so the first n members of a view's A(k) are
    found by walking it, without sorting or scanning A(k). Kept across calls (new keys are put
    in by bisection); do not modify the list returned."""
    keys = round_keys(round_, pks)
    s = _sorted.get(round_)
    if s is None or s[0] is not keys:   # a new round, or the memo was started over
        for r in [r for r in _sorted if r not in _keys]:
            del _sorted[r]
        s = _sorted[round_] = (keys, [])
    out = s[1]
    if len(out) < len(keys):
        new = list(keys)[len(out):]   # the memo only grows: its newest keys come last
        if len(new) <= 64:
            for pk in new:
                insort(out, pk, key=keys.__getitem__)
        else:
            out[:] = sorted(keys, key=keys.__getitem__)
    return out
