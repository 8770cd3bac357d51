"""Build the engine for a scenario and run it."""
from __future__ import annotations

from typing import Any

from gossipnode.learn.data import Dataset

from .config import SimConfig
from .engine import Engine, ProgressFn


def make_engine(cfg: SimConfig, data: Dataset | None = None) -> Engine:
    if cfg.protocol == "modest":
        from .modest import ModestSim as cls
    elif cfg.protocol == "gossip":
        from .gossip import GossipSim as cls
    elif cfg.protocol == "fl":
        from .fl import FLSim as cls
    elif cfg.protocol == "dpsgd":
        from .dpsgd import DPSGDSim as cls
    else:
        raise ValueError(f"unknown protocol {cfg.protocol!r}")
    return cls(cfg, data)


def run_sim(cfg: SimConfig, progress: ProgressFn | None = None, data: Dataset | None = None) -> dict[str, Any]:
    return make_engine(cfg, data).run(progress)
