"""The one exception type that untrusted bytes can produce."""
from __future__ import annotations

TOO_LARGE = "too_large"
MALFORMED = "malformed"
UNKNOWN_VERSION = "unknown_version"
BAD_SIGNATURE = "bad_signature"
WRONG_NETWORK = "wrong_network"
REPLAY = "replay"
UNKNOWN_TYPE = "unknown_type"

REASONS = (TOO_LARGE, MALFORMED, UNKNOWN_VERSION, BAD_SIGNATURE, WRONG_NETWORK, REPLAY, UNKNOWN_TYPE)


class WireError(Exception):
    """A frame was rejected. `reason` is one of REASONS (stable, for counters and HTTP replies)."""

    def __init__(self, reason: str, message: str = "") -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
