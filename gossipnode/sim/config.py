"""Scenario of one simulation run, and the small spec languages of its options."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from gossipnode.learn.attack_names import canonical_attack, canonical_attacks
from gossipnode.learn.compress_names import parse_compress

PROTOCOLS = ("modest", "gossip", "fl", "dpsgd")


@dataclass(frozen=True)
class SimConfig:
    protocol: str = "modest"
    nodes: int = 100
    rounds: int | None = 50           # stop after this many rounds (protocol's notion, see the README, "The simulator")
    duration: float | None = None     # or after this much virtual time (s); the first limit reached wins
    seed: int = 0
    # data and model
    dataset: str = "mnist1d"          # mnist1d or a .npz file (x, y, x_test, y_test)
    mnist1d_samples: int = 0          # 0: learn's default (10,000)
    partition: str = "iid"
    model: str = "cnn1d"
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 20
    local_epochs: int = 1
    init: str = "same"                # same | independent (per-node seeded initial models)
    threads: int = 1                  # torch CPU threads
    # aggregation pipeline: the daemon's defaults and parameters (gossipnode/config.py NodeConfig)
    filter: str = "sybilwall"
    combine: str = "mean"
    correct: str = "vc"
    beta: float = 0.5                 # gossip: weight of the own model in a merge
    krum_f: int = 1
    multikrum_m: int = 3
    trim_beta: float = 0.1
    vc_eps: float = 1e-8
    vc_rho: float = 1.0
    vc_max_corr: float = 0.3
    round_twins: str = "on"           # sybilwall: weight 0 to near-copies among a round's updates (daemon's)
    max_update_norm: float = 100.0    # model sanity (the daemon's --max-update-norm); 0: off
    adopt_margin: float = 0.5         # modest: the daemon's adoption check (--adopt-margin); 0: off
    history_records: int = 1          # SybilWall history records piggy-backed per model message (daemon's)
    history_dtype: str = "f2"         # histories travel as float16 (f2) or float32 (f4)
    history_sketch: int = 128         # sybilwall: sketch tables of this many values per peer; 0: records
    # node (default, what a deployment does) | global: an upper bound no deployment has, every
    # aggregator reads and extends one history store (each identity's updates wherever aggregated)
    history_scope: str = "node"
    # MoDeST
    sample_size: int = 10
    aggregators: int = 1
    success_fraction: float = 1.0
    ping_timeout: float = 5.0
    prewalk: bool = True              # modest: the core's pre-walks (SPEC 15.6); off only to measure them
    keepalive: bool = True            # modest: keep-alive pings, sparse idle probes (SPEC 15.7); off to measure
    inactivity_threshold: int = 50
    aggregation_timeout: float = 30.0
    round_timeout: float = 60.0
    stall_timeout: float = -1.0       # < 0: off (the paper's protocol); 0: 3 x round_timeout
    role_slack: int = 2               # role checks, as the daemon's --role-slack
    accept_quorum: int = 1            # as the daemon's --accept-quorum
    # gossip learning
    gossip_interval: float = 60.0
    # D-PSGD
    topology: str = "exp"             # exp (one-peer exponential graph) | ring | regular:K | rgg:R:D
    dpsgd_timeout: float = 30.0       # wait this long for neighbours' models, then average what came
    # update compression (the daemon's --compress): none | f16 | int8 | topk:FRACTION
    compress: str = "none"
    # network and compute models
    latency: str = "uniform:0.01:0.1"       # seconds per link: const:X | uniform:A:B | lognormal:MU:SIGMA | FILE.npy
    bandwidth: str = "const:12500000"       # bytes/s per node (uplink = downlink): same syntax
    compute: str = "const:200"              # training speed, samples/s per node: same syntax
    agg_time: float = 0.002                 # seconds per aggregated contribution
    # scenario
    churn: str = ""                   # e.g. crash:5:60:300:16,join:5:60:330:4 (COUNT:EVERY:START:TIMES)
    attack: str = "none"              # none | label-flip (or labelflip) | backdoor; stored canonical
    sybils: float = 0.0               # Sybil identities per honest node (phi)
    sybil_links: int = 2              # D-PSGD: honest neighbours of each Sybil identity
    sybil_aggregate: str = "honest"   # modest: honest | replace (a Sybil aggregator sends the attacker's model)
                                      # | drop (it ignores the updates: sends the current model again)
    # measurement
    eval_every: float = 0.0           # virtual seconds between evaluations (0: auto)
    eval_nodes: int = 20              # honest nodes evaluated per evaluation (gossip, dpsgd)
    eval_samples: int = 0             # test samples used (0: all)
    eval_attack: str = ""             # also measure these attacks' rates (no-attack baselines), comma-separated
    target: float = 0.8               # time/bytes to reach this mean accuracy are reported
    stop_at_target: int = 0           # 1: stop as soon as the mean accuracy reaches the target
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; choose from {PROTOCOLS}")
        if self.nodes < 2:
            raise ValueError("need at least 2 nodes")
        if self.rounds is None and self.duration is None:
            raise ValueError("give rounds or duration")
        if self.init not in ("same", "independent"):
            raise ValueError("init must be 'same' or 'independent'")
        object.__setattr__(self, "attack", canonical_attack(self.attack))
        object.__setattr__(self, "eval_attack", ",".join(canonical_attacks(self.eval_attack)))
        if self.sybils < 0:
            raise ValueError("sybils (phi) must be >= 0")
        if self.sybils > 0 and self.attack == "none":
            raise ValueError("--sybils needs --attack label-flip or backdoor")
        if self.sybil_aggregate not in ("honest", "replace", "drop"):
            raise ValueError("sybil_aggregate must be honest, replace or drop")
        if self.round_twins not in ("on", "off"):
            raise ValueError("round_twins must be on or off")
        if self.history_dtype not in ("f2", "f4"):
            raise ValueError("history_dtype must be f2 or f4")
        d = self.history_sketch
        if not (0 <= d <= 1024 and d & (d - 1) == 0):
            raise ValueError("history_sketch must be 0 or a power of two up to 1024")
        if self.history_scope not in ("node", "global"):
            raise ValueError("history_scope must be node or global")
        if not self.adopt_margin >= 0:
            raise ValueError("adopt_margin must be >= 0")
        parse_churn(self.churn)
        parse_topology(self.topology)
        object.__setattr__(self, "compress", str(parse_compress(self.compress)))

    @property
    def n_sybils(self) -> int:
        return round(self.sybils * self.nodes) if self.attack != "none" else 0

    @property
    def measured_attacks(self) -> tuple[str, ...]:
        """Attacks whose rates evaluations report: the configured one first, then ``eval_attack``."""
        own = () if self.attack == "none" else (self.attack,)
        return tuple(dict.fromkeys(own + canonical_attacks(self.eval_attack)))

    def pipeline_params(self) -> dict:
        return {"krum_f": self.krum_f, "multikrum_m": self.multikrum_m, "trim_beta": self.trim_beta,
                "vc_eps": self.vc_eps, "vc_rho": self.vc_rho, "vc_max_corr": self.vc_max_corr,
                "round_twins": self.round_twins == "on", "history_sketch": self.history_sketch}

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ChurnStep:
    kind: str        # crash | leave | join | partition
    count: int
    every: float     # partition: how long the cut lasts
    start: float
    times: int
    groups: tuple[int, ...] = ()   # partition: part sizes in node order (the last takes the rest)


def parse_churn(spec: str) -> list[ChurnStep]:
    """``crash:5:60:300:16`` = crash 5 nodes every 60 s from t = 300 s, 16 times (MoDeST's schedule).
    ``leave:...`` leaves gracefully, ``join:...`` adds new nodes. ``partition:3/3:120:240`` cuts
    the nodes present into parts of 3 and 3 (node order; the last part takes the rest) at
    t = 120 s for 240 s, then heals (messages across parts are lost). Comma-separated."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        bits = part.split(":")
        if bits[0] == "partition":
            out.append(_parse_partition(part, bits))
            continue
        if bits[0] not in ("crash", "leave", "join") or len(bits) != 5:
            raise ValueError(f"bad churn step {part!r}: want crash|leave|join:COUNT:EVERY:START:TIMES")
        try:
            step = ChurnStep(bits[0], int(bits[1]), float(bits[2]), float(bits[3]), int(bits[4]))
        except ValueError:
            raise ValueError(f"bad churn step {part!r}: numbers expected") from None
        if step.count < 0 or step.every <= 0 or step.times < 0 or step.start < 0:
            raise ValueError(f"bad churn step {part!r}")
        out.append(step)
    return out


def _parse_partition(part: str, bits: list[str]) -> ChurnStep:
    if len(bits) != 4:
        raise ValueError(f"bad churn step {part!r}: want partition:SIZES:START:DURATION, e.g. partition:3/3:120:240")
    try:
        groups = tuple(int(g) for g in bits[1].split("/"))
        start, duration = float(bits[2]), float(bits[3])
    except ValueError:
        raise ValueError(f"bad churn step {part!r}: numbers expected") from None
    if len(groups) < 2 or min(groups) < 1 or start < 0 or duration <= 0:
        raise ValueError(f"bad churn step {part!r}: at least two parts of >= 1 node, duration > 0")
    return ChurnStep("partition", 0, duration, start, 1, groups)


def parse_topology(spec: str) -> tuple[str, int, float]:
    """(name, degree, radius): exp, ring, regular:K, or rgg:RADIUS:MAX_DEGREE (the SybilWall
    paper's random geometric graph is rgg:0.2:7)."""
    if spec in ("exp", "ring"):
        return spec, 0, 0.0
    name, _, rest = spec.partition(":")
    if name == "regular" and rest.isdigit() and int(rest) >= 1:
        return name, int(rest), 0.0
    r, _, k = rest.partition(":")
    try:
        if name == "rgg" and k.isdigit() and int(k) >= 1 and 0 < float(r) <= 2:
            return name, int(k), float(r)
    except ValueError:
        pass
    raise ValueError(f"bad topology {spec!r}: want exp, ring, regular:K or rgg:RADIUS:MAX_DEGREE")


def draw(spec: str, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Values from ``const:X``, ``uniform:A:B``, ``lognormal:MU:SIGMA`` (of ln x), ``normal:MU:SD``
    (clipped at 0) or a ``.npy`` file (used as is; must have the requested shape)."""
    if spec.endswith(".npy"):
        arr = np.load(spec, allow_pickle=False).astype(np.float64)
        if arr.shape != (size if isinstance(size, tuple) else (size,)):
            raise ValueError(f"{spec}: shape {arr.shape}, expected {size}")
        return arr
    name, *args = spec.split(":")
    try:
        a = [float(x) for x in args]
    except ValueError:
        raise ValueError(f"bad distribution {spec!r}") from None
    if name == "const" and len(a) == 1:
        return np.full(size, a[0])
    if name == "uniform" and len(a) == 2:
        return rng.uniform(a[0], a[1], size)
    if name == "lognormal" and len(a) == 2:
        return rng.lognormal(a[0], a[1], size)
    if name == "normal" and len(a) == 2:
        return np.maximum(rng.normal(a[0], a[1], size), 0.0)
    raise ValueError(f"bad distribution {spec!r}: want const:X, uniform:A:B, lognormal:MU:SIGMA, "
                     "normal:MU:SD or FILE.npy")
