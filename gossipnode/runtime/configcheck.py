"""Pure, fast checks of a node configuration: types of every layer's values and allowed values.

No torch, numpy or file access here (the CLI runs this before anything heavy loads). Every
error is a `ConfigError` whose message names the flag (or TOML key / environment variable)
and what is allowed, in one line.
"""
from __future__ import annotations

import math
import re
from typing import Any
from urllib.parse import urlsplit

from gossipnode.learn.attack_names import canonical_attacks
from gossipnode.learn.compress_names import parse_compress
from gossipnode.transport import REGISTRY as TRANSPORT_REGISTRY
from gossipnode.transport import choices as transport_choices

# Kept in step with learn.models.BUILTIN_MODELS and the aggregation registry (a test checks);
# listed here so that checking a configuration imports no torch.
BUILTIN_MODELS = ("cnn1d", "mlp", "logreg", "gnlenet")
FILTERS = ("sybilwall", "foolsgold", "krum", "multikrum", "none")
COMBINERS = ("mean", "median", "trimmed-mean")
CORRECTIONS = ("vc", "vc-always", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
PEER_SCHEMES = ("http", "https", "mqtt")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the flag and what is allowed."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def where(name: str, source: str) -> str:
    """How the user wrote a setting: `--port`, `GOSSIPNODE_PORT` or `key 'port' in FILE`."""
    if source == "env":
        return f"GOSSIPNODE_{name.upper()}"
    if source.startswith("file:"):
        return f"key '{name}' in {source[5:]}"
    return flag(name)


def coerce(name: str, typ: Any, value: Any, source: str, spelled: str | None = None) -> Any:
    """`value` as the field's type. Strings (environment, flags) are parsed; a TOML value must
    already have the right type (an int is fine for a float). `spelled`: the key as the file has it."""
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    text = isinstance(value, str) and not source.startswith("file:")
    w = where(spelled or name, source)
    if t.startswith("tuple"):
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value if v.strip())
        raise ConfigError(f"{w} must be a list of strings (or one comma-separated string), got {value!r}")
    if t == "bool":
        if isinstance(value, bool):
            return value
        if text and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{w} must be true or false, got {value!r}")
    if t == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if text:
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{w} must be an integer, got {value!r}")
    if t == "float":
        out = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            out = float(value)
        elif text:
            try:
                out = float(value.strip())
            except ValueError:
                pass
        if out is None:
            raise ConfigError(f"{w} must be a number, got {value!r}")
        if not math.isfinite(out):
            raise ConfigError(f"{w} must be a finite number, got {value!r}")
        return out
    if t == "str":
        if isinstance(value, str):
            return value
        raise ConfigError(f"{w} must be a string, got {value!r}")
    raise ConfigError(f"cannot set {w} from {value!r}")


def check_url(what: str, url: str, schemes: tuple[str, ...]) -> None:
    """`url` must be SCHEME://HOST[:PORT][/PATH] with one of `schemes` (mqtt://NODE_ID has no port)."""
    allowed = f"want a URL like {schemes[0]}://HOST:PORT (schemes: {', '.join(schemes)})"
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as e:
        raise ConfigError(f"{what}: {url!r} is not a valid URL ({e}); {allowed}") from None
    if "://" not in url or u.scheme not in schemes or not u.hostname or " " in url:
        raise ConfigError(f"{what}: {url!r} is not a URL with a scheme; {allowed}")
    if port == 0:
        raise ConfigError(f"{what}: {url!r}: port must be 1-65535")


def _partition(value: str) -> None:
    if value == "iid":
        return
    name, _, arg = value.partition(":")
    try:
        ok = name == "dirichlet" and float(arg) > 0 and math.isfinite(float(arg))
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"--partition must be iid or dirichlet:ALPHA with ALPHA > 0, got {value!r}")


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{flag(name)} must be one of {', '.join(allowed)}; got {value!r}")


def check(cfg: Any, explicit: set[str]) -> None:
    """Allowed values of a coerced NodeConfig; `explicit`: the fields some layer set."""
    if not 1 <= cfg.port <= 65535:
        raise ConfigError(f"--port must be 1-65535, got {cfg.port}")
    if not cfg.host or " " in cfg.host:
        raise ConfigError(f"--host must be an address to bind (e.g. 127.0.0.1 or 0.0.0.0), got {cfg.host!r}")
    if cfg.advertise:
        check_url("--advertise", cfg.advertise, ("http", "https"))
    for p in cfg.peers:
        check_url("--peers", p, PEER_SCHEMES)
    transports = [t.strip() for t in cfg.transport.split(",")]
    if not all(t in TRANSPORT_REGISTRY for t in transports):   # the registry loads no transport
        raise ConfigError(f"--transport must be {transport_choices()}; got {cfg.transport!r}")
    if "mqtt" in transports:
        if not cfg.broker:
            raise ConfigError("--transport mqtt needs --broker mqtt://HOST:1883 (or mqtts://HOST:8883)")
        check_url("--broker", cfg.broker, ("mqtt", "mqtts"))
    elif "broker" in explicit and cfg.broker:
        check_url("--broker", cfg.broker, ("mqtt", "mqtts"))
    if cfg.data == "" and cfg.dataset != "mnist1d":
        raise ConfigError(f"--dataset must be mnist1d (or give --data FILE.npz), got {cfg.dataset!r}")
    _partition(cfg.partition)
    if cfg.model not in BUILTIN_MODELS:
        mod, sep, attr = cfg.model.partition(":")
        if not (sep and _IDENT.match(mod) and attr.isidentifier()):
            raise ConfigError(f"--model must be one of {', '.join(BUILTIN_MODELS)} or package.module:factory; "
                              f"got {cfg.model!r}")
    if not _DEVICE.match(cfg.device):
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps; got {cfg.device!r}")
    _one_of("filter", cfg.filter, FILTERS)
    _one_of("combine", cfg.combine, COMBINERS)
    _one_of("correct", cfg.correct, CORRECTIONS)
    _one_of("protocol", cfg.protocol, ("modest", "gossip"))
    _one_of("history_dtype", cfg.history_dtype, ("f2", "f4"))
    d = cfg.history_sketch
    if not (type(d) is int and 0 <= d <= 1024 and d & (d - 1) == 0):
        raise ConfigError(f"--history-sketch must be 0 or a power of two up to 1024, got {d!r}")
    try:
        parse_compress(cfg.compress)
    except ValueError as e:
        raise ConfigError(f"--compress: {e}") from None
    _one_of("log_level", cfg.log_level.lower(), LOG_LEVELS)
    _one_of("log_format", cfg.log_format, LOG_FORMATS)
    for name in ("attack", "eval_attack"):  # one spelling: label-flip (labelflip accepted) or backdoor
        try:
            canonical_attacks(getattr(cfg, name))
        except ValueError:
            raise ConfigError(f"{flag(name)} must be label-flip (or labelflip) or backdoor"
                              f"{' (comma-separated)' if name == 'eval_attack' else ''}; "
                              f"got {getattr(cfg, name)!r}") from None
    if cfg.train_process not in ("on", "off"):
        raise ConfigError(f"--train-process must be on or off, got {cfg.train_process!r}")
    if cfg.round_twins not in ("on", "off"):
        raise ConfigError(f"--round-twins must be on or off, got {cfg.round_twins!r}")
    if not 0 <= cfg.train_nice <= 19:
        raise ConfigError(f"--train-nice must be in 0..19, got {cfg.train_nice}")
    if not 0 < cfg.vc_max_corr <= 1:
        raise ConfigError(f"--vc-max-corr must be in (0, 1], got {cfg.vc_max_corr}")
    for name in ("local_epochs", "batch_size", "threads", "sybils"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{flag(name)} must be >= 1, got {getattr(cfg, name)}")
    for name in ("lr", "http_timeout", "http_min_rate_mb", "max_message_mb", "gossip_interval"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(f"{flag(name)} must be > 0, got {getattr(cfg, name)}")
    for name in ("momentum", "max_update_norm", "adopt_margin", "inbound_budget_mb", "mnist1d_samples", "rounds",
                 "bootstrap_wait", "bootstrap_timeout"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{flag(name)} must be >= 0, got {getattr(cfg, name)}")
    if cfg.inbound_budget_mb and cfg.inbound_budget_mb < cfg.max_message_mb:
        raise ConfigError("--inbound-budget-mb must be at least --max-message-mb (or 0)")
    if not 0 <= cfg.beta <= 1:
        raise ConfigError(f"--beta must be in [0, 1], got {cfg.beta}")
    try:
        i, n = (int(x) for x in cfg.shard.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {cfg.shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {cfg.shard}: need 0 <= I < N")
    try:
        cfg.modest()
    except ValueError as e:  # ModestConfig's own checks: name the flags
        raise ConfigError(f"MoDeST settings (--sample-size, --aggregators, --success-fraction, timeouts): {e}") \
            from None
