"""INFO logs stay readable: a peer that cannot be reached is reported once, not every second."""
from __future__ import annotations

import asyncio
import logging

from conftest import free_ports
from gossipnode.runtime.config import NodeConfig
from gossipnode.runtime.node import Node


async def test_unreachable_bootstrap_peer_is_logged_once_at_info(tmp_path, caplog) -> None:
    port, dead = free_ports(2)
    cfg = NodeConfig(port=port, state_dir=str(tmp_path / "n"), mnist1d_samples=1000, network_id="t",
                     peers=(f"http://127.0.0.1:{dead}",), bootstrap_wait=600, bootstrap_timeout=600)
    n = Node(cfg)
    with caplog.at_level(logging.DEBUG, logger="gossipnode.node"):
        await n.start()
        try:
            for _ in range(100):   # the node re-advertises to its bootstrap peer every second
                await asyncio.sleep(0.1)
                if n.telemetry.send_failures >= 3:
                    break
        finally:
            await n.stop(graceful=False)
    assert n.telemetry.send_failures >= 3
    fails = [r for r in caplog.records if "failed" in r.getMessage() and str(dead) in r.getMessage()]
    assert [r.levelno for r in fails].count(logging.INFO) == 1, [r.getMessage() for r in fails]
    assert len(fails) >= 3 and all("Traceback" not in r.getMessage() for r in fails)
