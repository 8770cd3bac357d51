"""core/: the sans-I/O protocol. State machines (MoDeST rounds, gossip learning, membership,
role checks, liveness) take events with the time passed in and return actions; `interface`
declares their surface (ProtocolCore) and `driver` is the one interpreter of their actions.

May import: the standard library only (no asyncio, sockets, clocks, numpy or torch)."""
