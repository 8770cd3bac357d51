"""wire/: everything that touches untrusted bytes (envelope, codec, signatures, tensors, and
MQTT's chunk framing and announce records: wire.chunks, wire.announce).

May import: core/ (message types), numpy, msgpack, cryptography, blake3."""
from gossipnode.wire.codec import (
    Envelope,
    Frame,
    MsgType,
    decode,
    encode,
    encode_frame,
    seal,
    signing_digest,
    type_of,
)
from gossipnode.wire.errors import REASONS, WireError
from gossipnode.wire.identity import Identity, node_id, verify
from gossipnode.wire.replay import ReplayGuard, SeqCounter
from gossipnode.wire.tensors import apply_delta, from_raw, make_delta, model_hash, to_raw

__all__ = [
    "REASONS", "Envelope", "Frame", "Identity", "MsgType", "ReplayGuard", "SeqCounter", "WireError",
    "apply_delta", "decode", "encode", "encode_frame", "from_raw", "make_delta", "model_hash", "node_id", "seal",
    "signing_digest", "to_raw", "type_of", "verify",
]
