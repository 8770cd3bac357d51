"""Discrete-event simulator: the real protocol cores over a modelled network (see the README, "The simulator")."""
from .config import SimConfig
from .run import make_engine, run_sim

__all__ = ["SimConfig", "make_engine", "run_sim"]
