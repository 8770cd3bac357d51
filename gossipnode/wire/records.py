"""Membership records signed by their own peer (protocol/SPEC.md "Membership records").

    digest = sha256(b"gossipnode/v2 record\\0" || msgpack([network_id, peer, last_active, index,
                                                          status, addresses]))
    sig    = Ed25519-Sign(peer's private key, digest)

`Ed25519RecordAuth` is the daemon's `core.auth.RecordAuth`: it signs this node's own record and
verifies anyone's, remembering the records it verified (a bounded LRU), so a view of 1,000
unchanged records that several senders relay costs dictionary look-ups, not verifications.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import replace

import msgpack

from gossipnode.core.messages import ViewRecord
from gossipnode.wire.identity import Identity, verify

RECORD_DOMAIN = b"gossipnode/v2 record\x00"
DEFAULT_CACHE = 1 << 16


def record_digest(network_id: str, rec: ViewRecord) -> bytes:
    body = msgpack.packb([network_id, rec.peer, rec.last_active, rec.index, int(rec.status),
                          list(rec.addresses)], use_bin_type=True)
    return hashlib.sha256(RECORD_DOMAIN + body).digest()


class Ed25519RecordAuth:
    def __init__(self, identity: Identity, network_id: str, cache_size: int = DEFAULT_CACHE) -> None:
        self.identity = identity
        self.network_id = network_id
        self.cache_size = cache_size
        self._ok: OrderedDict[ViewRecord, None] = OrderedDict()
        self.verifications = 0   # Ed25519 verifications actually computed
        self.cache_hits = 0

    def sign(self, record: ViewRecord) -> ViewRecord:
        if record.peer != self.identity.public_key:
            raise ValueError("a node signs only its own membership record")
        signed = replace(record, sig=self.identity.sign(record_digest(self.network_id, record)))
        self._remember(signed)
        return signed

    def verify(self, record: ViewRecord) -> bool:
        try:
            if record in self._ok:
                self._ok.move_to_end(record)
                self.cache_hits += 1
                return True
            self.verifications += 1
            ok = verify(record.peer, record.sig, record_digest(self.network_id, record))
        except Exception:  # noqa: BLE001 - a record that cannot even be hashed is not valid
            return False
        if ok:
            self._remember(record)
        return ok

    def _remember(self, record: ViewRecord) -> None:
        self._ok[record] = None
        if len(self._ok) > self.cache_size:
            self._ok.popitem(last=False)
