"""Deterministic MoDeST sample order: every node with the same view computes the same order."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable


def order_key(pk: bytes, round_: int) -> bytes:
    """sha256(public_key || round as 8-byte big-endian): written into protocol/SPEC.md."""
    return hashlib.sha256(pk + round_.to_bytes(8, "big")).digest()


def sample_order(candidates: Iterable[bytes], round_: int) -> list[bytes]:
    return sorted(set(candidates), key=lambda pk: order_key(pk, round_))


def sample(candidates: Iterable[bytes], round_: int, size: int) -> list[bytes]:
    return sample_order(candidates, round_)[:size]
