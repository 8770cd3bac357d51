"""Discrete-event simulator: the real protocol cores over a modelled network (see docs/README-sim.md)."""
from .config import SimConfig
from .run import make_engine, run_sim

__all__ = ["SimConfig", "make_engine", "run_sim"]
