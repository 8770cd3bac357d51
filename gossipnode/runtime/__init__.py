"""The node runtime: asyncio wiring of the protocol core, the wire, transports and learning.

`node.Node` keeps the lifecycle and the dispatch; the services beside it (model exchange,
histories, the learning worker, telemetry) never import the node. `core.driver.ActionDriver` is
the one interpreter of the core's actions, shared with the simulator and the test harness.

May import: core, wire, learn, transport, api. Importing this package loads nothing heavy (the CLI
reads `runtime.config` before torch is loaded)."""
