"""Who may say what about membership: signing and verifying membership records.

A record about node X (addresses, join/leave, index, last active round) is valid only with X's
own signature (SPEC "Membership records"). The cores never sign or verify themselves; they ask
an injected `RecordAuth`:

* the daemon passes `wire.records.Ed25519RecordAuth` (the node's key, the network id, a cache
  of verified records so a view of unchanged records costs no verification);
* the simulator and the test harness use `DigestAuth` below: the same rules (a record is bound
  to its content; a changed field invalidates it), at the cost of a hash, but anyone can
  compute it, so it proves nothing against an adversary that knows the scheme.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Protocol

from .messages import ViewRecord

SIG_LEN = 64
POW_DOMAIN = b"gossipnode/v2 pow\x00"


def pow_bits(peer: bytes, nonce: int) -> int:
    """Leading zero bits of sha256(domain || peer || u64be(nonce)): the join proof-of-work of a key.

    It prices identities, not records: one nonce per key, found once, valid for every record."""
    if not 0 <= nonce < 1 << 64:
        return 0
    h = int.from_bytes(hashlib.sha256(POW_DOMAIN + peer + nonce.to_bytes(8, "big")).digest(), "big")
    return 256 - h.bit_length()


def solve_pow(peer: bytes, bits: int, start: int = 0) -> int:
    """The first nonce >= start with at least `bits` leading zero bits (about 2**bits hashes)."""
    if bits <= 0:
        return 0
    prefix = hashlib.sha256(POW_DOMAIN + peer)
    limit = 1 << (256 - bits)
    n = start
    while True:
        h = prefix.copy()
        h.update(n.to_bytes(8, "big"))
        if int.from_bytes(h.digest(), "big") < limit:
            return n
        n += 1


class RecordAuth(Protocol):
    def sign(self, record: ViewRecord) -> ViewRecord:
        """The record with `sig` set. Only a node's own record can be signed by the daemon."""
        ...

    def verify(self, record: ViewRecord) -> bool:
        """True iff `record.sig` is the record peer's signature over the record's fields."""
        ...


def record_bytes(rec: ViewRecord) -> bytes:
    """An unambiguous framing of the signed fields (for DigestAuth; the wire form is in wire/records.py)."""
    parts = [rec.peer, rec.last_active.to_bytes(8, "big"), rec.index.to_bytes(8, "big"),
             int(rec.status).to_bytes(1, "big"), len(rec.addresses).to_bytes(1, "big")]
    for a in rec.addresses:
        b = a.encode("utf-8")
        parts += [len(b).to_bytes(2, "big"), b]
    return b"".join(parts)


class DigestAuth:
    """Cheap stand-in for the simulator and tests: sig = sha512(domain || fields)."""

    def __init__(self, domain: bytes = b"gossipnode/sim record\x00") -> None:
        self.domain = domain
        self.verified = 0   # how many verifications were computed (tests, benchmarks)

    def _sig(self, rec: ViewRecord) -> bytes:
        return hashlib.sha512(self.domain + record_bytes(rec)).digest()

    def sign(self, record: ViewRecord) -> ViewRecord:
        return replace(record, sig=self._sig(record))

    def verify(self, record: ViewRecord) -> bool:
        self.verified += 1
        try:
            return len(record.sig) == SIG_LEN and record.sig == self._sig(record)
        except (OverflowError, AttributeError, TypeError, ValueError):
            return False
