"""The node's command-line flags, one table for `gossipnode start`, `cluster` and `sim`
(same name, same meaning). Plain data: importing it loads nothing."""
from __future__ import annotations

from typing import Any

# (flag, config field, type, help). Every flag can also come from a TOML file or GOSSIPNODE_<FIELD>.
NODE_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--host", "host", str, "address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)"),
    ("--port", "port", int, "REST and peer-message port (default 8470)"),
    ("--advertise", "advertise", str, "URL peers use to reach this node (default http://HOST:PORT)"),
    ("--peers", "peers", str, "bootstrap peers, comma-separated URLs"),
    ("--state-dir", "state_dir", str, "identity key and checkpoints (default ./gossipnode-state)"),
    ("--network-id", "network_id", str, "nodes only talk to nodes of the same network id"),
    ("--transport", "transport", str, "http, mqtt or http,mqtt"),
    ("--broker", "broker", str, "MQTT broker URL mqtt://HOST:1883 or mqtts://HOST:8883 (needed by --transport mqtt)"),
    ("--mqtt-username", "mqtt_username", str, "MQTT user name (or GOSSIPNODE_MQTT_USERNAME)"),
    ("--mqtt-password", "mqtt_password", str, "MQTT password (better: GOSSIPNODE_MQTT_PASSWORD)"),
    ("--mqtt-ca", "mqtt_ca", str, "CA certificate file for mqtts://"),
    ("--mqtt-password-file", "mqtt_password_file", str, "read the MQTT password from this file"),
    ("--api-token", "api_token", str,
     "require this bearer token for /v1/status, /v1/peers, /v1/rounds, /v1/models/*, /metrics "
     "(better: GOSSIPNODE_API_TOKEN or --api-token-file; /v1/health and peer messages stay open)"),
    ("--api-token-file", "api_token_file", str, "read the API token from this file"),
    ("--tls-cert", "tls_cert", str, "serve the REST/HTTP port over TLS with this PEM certificate (chain)"),
    ("--tls-key", "tls_key", str, "the PEM private key of --tls-cert"),
    ("--dataset", "dataset", str, "built-in data set: mnist1d"),
    ("--shard", "shard", str, "this node's shard I/N of the built-in data set"),
    ("--partition", "partition", str, "iid or dirichlet:ALPHA"),
    ("--data", "data", str, "your own .npz (arrays x, y, optional x_test, y_test)"),
    ("--seed", "seed", int, "seed of the data split and the initial model"),
    ("--mnist1d-samples", "mnist1d_samples", int, "MNIST-1D size (0: default)"),
    ("--model", "model", str, "cnn1d, mlp, logreg, gnlenet or package.module:factory"),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N or mps"),
    ("--local-epochs", "local_epochs", int, "local epochs per round"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--lr", "lr", float, "SGD learning rate"),
    ("--momentum", "momentum", float, "SGD momentum"),
    ("--threads", "threads", int, "torch CPU threads"),
    ("--train-process", "train_process", str,
     "on: train in a child process, so training never holds the event loop's GIL (default off)"),
    ("--train-nice", "train_nice", int,
     "with --train-process on: niceness 0-19 of the training child (default 10)"),
    ("--filter", "filter", str, "aggregation filter: sybilwall (default), foolsgold, krum, multikrum, none"),
    ("--combine", "combine", str, "aggregation combiner: mean (default), median, trimmed-mean"),
    ("--correct", "correct", str, "aggregation correction: vc (default: variance correction where the merged "
     "models are uncorrelated), vc-always (at every merge), none"),
    ("--krum-f", "krum_f", int, "krum/multikrum: assumed Byzantine contributions f"),
    ("--multikrum-m", "multikrum_m", int, "multikrum: contributions kept m"),
    ("--trim-beta", "trim_beta", float, "trimmed-mean: fraction trimmed at each side"),
    ("--vc-eps", "vc_eps", float, "variance correction epsilon"),
    ("--vc-rho", "vc_rho", float, "variance correction damping (1 = full correction)"),
    ("--round-twins", "round_twins", str, "sybilwall: on (default) gives weight 0 to near-copies (cosine >= 0.999) "
     "among one round's updates, which histories alone miss; off: the paper's weights only"),
    ("--vc-max-corr", "vc_max_corr", float, "vc: correct fully below half this correlation of the merged "
     "models, not at all above it"),
    ("--history-records", "history_records", int, "SybilWall history records piggy-backed per model message"),
    ("--history-dtype", "history_dtype", str, "f2 (float16, default) or f4: histories on the wire"),
    ("--history-sketch", "history_sketch", int, "sybilwall: every model message carries count-sketches of this "
     "many values (a power of two) of each known peer's history, which so follow identities; 0: the full "
     "history records of --history-records"),
    ("--compress", "compress", str,
     "compress this node's updates: none (float32, default), f16, int8 (per-block scale) or "
     "topk:FRACTION (e.g. topk:0.02); what is dropped is added to the next update (error feedback)"),
    ("--max-update-norm", "max_update_norm", float,
     "reject a received model with ||model - reference|| / ||reference|| above this "
     "(reference: a delta's base, else the current model; default 100; 0: off)"),
    ("--adopt-margin", "adopt_margin", float,
     "MoDeST: refuse another node's round model whose mean loss on this node's data exceeds that of "
     "the best of its current and last 8 accepted models by more than this many nats plus the skew of "
     "this node's labels (KL from uniform) (default 0.5; 0: off)"),
    ("--protocol", "protocol", str, "modest (default) or gossip (gossip learning)"),
    ("--gossip-interval", "gossip_interval", float, "gossip: seconds between pushes"),
    ("--beta", "beta", float, "gossip: weight of the own model when merging"),
    ("--independent-init", "independent_init", bool, "start from a random model of this node's own"),
    ("--attack", "attack", str, "label-flip (or labelflip) or backdoor: run Sybil attacker identities "
     "(for evaluation)"),
    ("--eval-attack", "eval_attack", str, "label-flip, backdoor or both (comma-separated): report these "
     "attacks' rates in evaluations (set it when the network has an attacker; none reported otherwise)"),
    ("--sybils", "sybils", int, "with --attack: number of Sybil identities in this process"),
    ("--sample-size", "sample_size", int, "MoDeST: trainers per round (s)"),
    ("--aggregators", "aggregators", int, "MoDeST: aggregators per round (a)"),
    ("--success-fraction", "success_fraction", float, "MoDeST: aggregate after s*sf updates"),
    ("--ping-timeout", "ping_timeout", float, "MoDeST: seconds before an unanswered candidate is skipped"),
    ("--inactivity-threshold", "inactivity_threshold", int, "MoDeST: tau, silent rounds before a peer is left out"),
    ("--aggregation-timeout", "aggregation_timeout", float, "aggregate what arrived after this many seconds"),
    ("--round-timeout", "round_timeout", float, "re-send after this many seconds without progress"),
    ("--stall-timeout", "stall_timeout", float,
     "idle without a new round this long: check the network, restart a round if nobody holds one "
     "(0: 3 x round timeout; < 0: off)"),
    ("--role-slack", "role_slack", int,
     "MoDeST role checks: a model's sender may be this many places behind the s (a) reachable "
     "candidates of the receiver's sample order and still count as sampled (default 2)"),
    ("--accept-quorum", "accept_quorum", int,
     "MoDeST: a trainer adopts a round's model only once this many aggregators sent the same hash "
     "(1..--aggregators; default 1)"),
    ("--bootstrap-wait", "bootstrap_wait", float, "seconds to wait for peers before round 1"),
    ("--bootstrap-timeout", "bootstrap_timeout", float, "start round 1 after this even if peers are silent"),
    ("--rounds", "rounds", int, "leave gracefully after this many rounds (0: run until stopped)"),
    ("--round-window", "round_window", int,
     "hearsay (records, pings, views) moves the round estimate at most this far above verified rounds (0: tau)"),
    ("--max-peers", "max_peers", int, "view cap: unknown peers beyond it are not added"),
    ("--max-pending", "max_pending", int, "joiners probed at once; more are dropped"),
    ("--join-rate", "join_rate", float, "JOIN adverts of non-members accepted per second per source IP"),
    ("--join-pow", "join_pow", int,
     "proof-of-work bits a joiner's key must carry (this node solves its own once, cached; 0: off)"),
    ("--max-message-mb", "max_message_mb", float, "largest accepted message"),
    ("--inbound-budget-mb", "inbound_budget_mb", float,
     "HTTP bodies being received/processed at once, in MiB (0: --max-message-mb); over it: 503"),
    ("--http-timeout", "http_timeout", float,
     "seconds: idle keep-alive and header time-out; a body may take this plus its size / min rate"),
    ("--http-min-rate-mb", "http_min_rate_mb", float, "MiB/s: slowest request body accepted"),
    ("--log-level", "log_level", str, "debug, info, warning or error"),
    ("--log-format", "log_format", str, "text or json (one JSON object per line)"),
]
