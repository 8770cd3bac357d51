"""Ed25519 node identity: key generation, persistence, signing and verification."""
from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

SEED_LEN = 32
PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


def node_id(public_key: bytes) -> str:
    """Short printable name of a node: first 16 hex chars of sha256(public key)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


class Identity:
    """A node's Ed25519 key pair. The private key never leaves this object except to disk."""

    __slots__ = ("_key", "_public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self._public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic identity from a 32-byte seed (test vectors, simulator)."""
        if not isinstance(seed, bytes) or len(seed) != SEED_LEN:
            raise ValueError(f"Ed25519 seed must be {SEED_LEN} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Load the raw 32-byte seed at `path`, or create it (mode 0600, atomic rename).

        A file of the wrong size is an error, never silently replaced: that would change the
        node's identity.
        """
        path = Path(path)
        try:
            seed = path.read_bytes()
        except FileNotFoundError:
            ident = cls.generate()
            _write_private(path, ident.seed)
            return ident
        if len(seed) != SEED_LEN:
            raise ValueError(f"{path}: identity file must hold exactly {SEED_LEN} bytes, has {len(seed)}")
        return cls.from_seed(seed)

    @property
    def seed(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_key(self) -> bytes:
        return self._public

    @property
    def node_id(self) -> str:
        return node_id(self._public)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:  # never show key material
        return f"Identity({self.node_id})"


def _write_private(path: Path, data: bytes) -> None:
    # mkstemp creates the file 0600 from the start, so the seed is never world-readable.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@lru_cache(maxsize=4096)
def _public_key(public_key: bytes) -> Ed25519PublicKey:
    # Parsing a point costs about as much as a verification; peers sign many frames.
    return Ed25519PublicKey.from_public_bytes(public_key)


def verify(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `data` by `public_key`. Never raises."""
    try:
        if (
            type(public_key) is not bytes
            or len(public_key) != PUBLIC_KEY_LEN
            or not isinstance(signature, bytes | bytearray)
            or len(signature) != SIGNATURE_LEN
        ):
            return False
        _public_key(public_key).verify(bytes(signature), bytes(data))
        return True
    except Exception:  # noqa: BLE001 - any failure to verify means "not valid"
        return False
