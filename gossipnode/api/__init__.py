"""api/: the REST API and dashboard every node serves. It reads a `Telemetry` (the Protocol in
api/app.py that runtime.telemetry implements), never the node.

May import: the standard library, aiohttp, msgpack (below the runtime: the runtime mounts it)."""
