"""Transports move opaque, already-encoded frames between peer addresses."""
