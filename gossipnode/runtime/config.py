"""Node configuration: one object, built from defaults < TOML file < environment < flags."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from gossipnode.runtime.configcheck import ConfigError, check, coerce
from gossipnode.core.config import ModestConfig, stall_timeout_from
from gossipnode.learn.attack_names import canonical_attack, canonical_attacks

ENV_PREFIX = "GOSSIPNODE_"


@dataclass(frozen=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 8470
    advertise: str = ""                 # URL peers should use to reach us; default http://host:port
    peers: tuple[str, ...] = ()
    state_dir: str = "./gossipnode-state"
    network_id: str = "gossipnode"
    # transports: "http", "mqtt" or "http,mqtt"; the REST API is always served over HTTP
    transport: str = "http"
    broker: str = ""                    # required with --transport mqtt: mqtt://HOST:1883 or mqtts://HOST:8883
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_ca: str = ""                    # CA file for mqtts:// (system CAs when empty)
    mqtt_password_file: str = ""         # read the MQTT password from this file (Docker/k8s secrets)
    # REST API protection (issue 13): a bearer token for models and detailed status, TLS
    api_token: str = ""                  # "": the API is open (as before)
    api_token_file: str = ""             # read the token from this file
    tls_cert: str = ""                   # PEM certificate (chain) for the REST/HTTP port
    tls_key: str = ""                    # its PEM private key
    # data
    dataset: str = "mnist1d"
    shard: str = "0/1"                  # I/N
    partition: str = "iid"
    data: str = ""                      # a user .npz file (x, y, optional x_test, y_test)
    seed: int = 0
    mnist1d_samples: int = 0            # 0: the learn package's default
    # model and training
    model: str = "cnn1d"
    device: str = "auto"
    local_epochs: int = 1
    batch_size: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    threads: int = 1                    # torch CPU threads per node
    train_process: str = "off"          # on: train in a child process (runtime/trainproc.py)
    train_nice: int = 10                # niceness of that child (0-19): the event loop goes first
    independent_init: bool = False
    # aggregation pipeline: filter -> combine -> correct
    filter: str = "sybilwall"           # sybilwall, foolsgold, krum, multikrum, none
    combine: str = "mean"               # mean, median, trimmed-mean
    correct: str = "vc"                 # vc (where the merged models are uncorrelated), vc-always, none
    krum_f: int = 1
    multikrum_m: int = 3
    trim_beta: float = 0.1
    vc_eps: float = 1e-8
    vc_rho: float = 1.0
    vc_max_corr: float = 0.3            # vc: no correction where the merged models correlate above this
    round_twins: str = "on"             # sybilwall: weight 0 to near-copies among a round's updates
    history_records: int = 1            # SybilWall history records piggy-backed per model message
    history_dtype: str = "f2"           # histories travel as float16 (f2) or float32 (f4)
    history_sketch: int = 128           # sybilwall: sketch tables of this many values per peer; 0: records
    compress: str = "none"              # trained deltas: none | f16 | int8 | topk:FRACTION (error feedback)
    # model sanity: reject a received model whose ||model - reference|| / ||reference|| exceeds this
    # (= learn.sanity.DEFAULT_MAX_UPDATE_NORM, not imported: config must not pull in torch)
    max_update_norm: float = 100.0      # 0: off (non-finite models are always rejected)
    # adoption check: refuse a round model whose loss on local data exceeds the current model's
    # by more than this many nats (= learn.sanity.DEFAULT_ADOPT_MARGIN); 0: off
    adopt_margin: float = 0.5
    # protocol
    protocol: str = "modest"            # modest, gossip
    gossip_interval: float = 5.0        # gossip: push the model to a random active peer this often
    beta: float = 0.5                   # gossip: weight of the own model when merging
    # attack (for measuring resilience): this process runs `sybils` identities with one poisoned model
    attack: str = ""                    # "", label-flip (or labelflip), backdoor; stored canonical
    eval_attack: str = ""               # honest nodes: measure these attacks' rates (label-flip,backdoor)
    sybils: int = 1
    # MoDeST
    sample_size: int = 10
    aggregators: int = 1
    success_fraction: float = 1.0
    ping_timeout: float = 5.0
    inactivity_threshold: int = 50
    aggregation_timeout: float = 30.0
    round_timeout: float = 60.0
    stall_timeout: float = 0.0          # 0: 3 x round_timeout; < 0: off
    role_slack: int = 2                 # role checks: places a sender may lie behind its sample
    accept_quorum: int = 1              # trainers adopt a round's model once this many aggregators agree
    bootstrap_wait: float = 3.0
    bootstrap_timeout: float = 30.0
    rounds: int = 0                     # 0: run until stopped
    # membership bounds (SPEC "Membership records")
    round_window: int = 0               # hearsay moves R at most this far above R_v (0: tau)
    max_peers: int = 10_000             # view cap: beyond it unknown peers are not added
    max_pending: int = 256              # joiners being probed at once
    join_rate: float = 32.0             # JOIN adverts of non-members per second per source IP (burst 2x)
    join_pow: int = 0                   # joiners' keys must carry this many bits of proof-of-work (0: off)
    # limits
    max_message_mb: float = 256.0
    inbound_budget_mb: float = 0.0      # request bodies in flight at once; 0: --max-message-mb
    http_timeout: float = 15.0          # idle/header time-out; a body's deadline adds size / min rate
    http_min_rate_mb: float = 1.0       # MiB/s: the slowest body accepted (and client deadlines)
    log_level: str = "info"
    log_format: str = "text"            # text or json (one JSON object per line)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.advertise or f"{'https' if self.tls_cert else 'http'}://{self.host}:{self.port}"

    def pipeline_params(self) -> dict[str, Any]:
        return {"krum_f": self.krum_f, "multikrum_m": self.multikrum_m, "trim_beta": self.trim_beta,
                "vc_eps": self.vc_eps, "vc_rho": self.vc_rho, "vc_max_corr": self.vc_max_corr,
                "round_twins": self.round_twins == "on", "history_sketch": self.history_sketch}

    def shard_index(self) -> tuple[int, int]:
        try:
            i, n = (int(x) for x in self.shard.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like I/N, got {self.shard!r}") from None
        if not (n >= 1 and 0 <= i < n):
            raise ValueError(f"--shard {self.shard}: need 0 <= I < N")
        return i, n

    def modest(self) -> ModestConfig:
        return ModestConfig(
            sample_size=self.sample_size, aggregators=self.aggregators,
            success_fraction=self.success_fraction, ping_timeout=self.ping_timeout,
            inactivity_threshold=self.inactivity_threshold,
            aggregation_timeout=self.aggregation_timeout, round_timeout=self.round_timeout,
            bootstrap_wait=self.bootstrap_wait, bootstrap_timeout=self.bootstrap_timeout,
            max_rounds=self.rounds or None,
            stall_timeout=stall_timeout_from(self.stall_timeout, self.round_timeout),
            round_window=self.round_window or None, max_peers=self.max_peers, max_pending=self.max_pending,
            join_pow=self.join_pow,
            role_slack=self.role_slack, accept_quorum=self.accept_quorum,
        )


def load_config(file: str | None = None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> NodeConfig:
    """Defaults, then a TOML file (keys as flag names with - or _), then GOSSIPNODE_* env, then flags.

    Raises ConfigError (a ValueError) with one line naming the flag, key or variable."""
    cfg = NodeConfig()
    types = {f.name: f.type for f in fields(NodeConfig) if f.name != "extra"}
    layers: list[tuple[str, dict[str, Any]]] = []
    spelled: dict[str, str] = {}   # a file's keys as written there (- or _)
    if file:
        try:
            with open(Path(file), "rb") as fh:
                data = tomllib.load(fh)
        except OSError as e:
            raise ConfigError(f"--config {file}: cannot read it ({e.strerror or e})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config {file}: not valid TOML ({e})") from None
        data = data.get("node", data)
        if not isinstance(data, dict):
            raise ConfigError(f"--config {file}: [node] must be a table")
        spelled = {k.replace("-", "_"): k for k in data}
        layers.append((f"file:{file}", {k.replace("-", "_"): v for k, v in data.items()}))
    env = os.environ if env is None else env
    layers.append(("env", {k[len(ENV_PREFIX):].lower(): v for k, v in env.items()
                           if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX):].lower() in types}))
    layers.append(("flag", {k: v for k, v in (overrides or {}).items() if v is not None}))
    explicit: set[str] = set()
    for source, layer in layers:
        unknown = sorted(spelled.get(k, k) if source.startswith("file:") else k for k in set(layer) - set(types))
        if unknown:
            src = f" in {source[5:]}" if source.startswith("file:") else ""
            raise ConfigError(f"unknown configuration key{'s' if len(unknown) > 1 else ''}{src}: "
                              f"{', '.join(unknown)} (see gossipnode start --help)")
        in_file = source.startswith("file:")
        cfg = replace(cfg, **{k: coerce(k, types[k], v, source, spelled.get(k) if in_file else None)
                              for k, v in layer.items()})
        explicit |= set(layer)
    check(cfg, explicit)
    return _read_secrets(_canonical_attacks(cfg))


def _canonical_attacks(cfg: NodeConfig) -> NodeConfig:
    """One spelling: --attack and --eval-attack are stored as label-flip / backdoor ("" for none)."""
    try:
        attack = canonical_attack(cfg.attack)
        return replace(cfg, attack="" if attack == "none" else attack,
                       eval_attack=",".join(canonical_attacks(cfg.eval_attack)))
    except ValueError as e:
        raise ConfigError(f"--attack / --eval-attack: {e}") from None


def _read_secrets(cfg: NodeConfig) -> NodeConfig:
    """--mqtt-password-file / --api-token-file (a flag or env value wins over the file);
    --tls-cert and --tls-key come together."""
    for name in ("mqtt_password", "api_token"):
        path = getattr(cfg, name + "_file")
        if path and not getattr(cfg, name):
            try:
                value = Path(path).read_text().strip()
            except OSError as e:
                raise ValueError(f"--{name.replace('_', '-')}-file {path}: {e.strerror or e}") from None
            cfg = replace(cfg, **{name: value})
    if bool(cfg.tls_cert) != bool(cfg.tls_key):
        raise ValueError("--tls-cert and --tls-key must be given together")
    for flag, path in (("--tls-cert", cfg.tls_cert), ("--tls-key", cfg.tls_key)):
        if path and not Path(path).is_file():
            raise ValueError(f"{flag} {path}: no such file")
    return cfg
