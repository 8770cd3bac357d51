"""Discrete-event simulator: the real protocol cores, the shared driver and the daemon's exchange
rules over a modelled network (see the README, "The simulator").

May import: core, wire, learn, runtime (its store and history gossip), never api or cli."""
from .config import SimConfig
from .run import make_engine, run_sim

__all__ = ["SimConfig", "make_engine", "run_sim"]
