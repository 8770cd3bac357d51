"""The data set a node's settings name (numpy only: checked before torch loads)."""
from __future__ import annotations

from typing import Any

from gossipnode.learn import data as ldata

# The last data set loaded, by the settings that define it: `gossipnode start` loads (checks) the
# data before it creates the node, and the node's learner takes the same object.
_last_dataset: tuple[tuple, ldata.Dataset] | None = None


def load_dataset(cfg: Any) -> ldata.Dataset:
    global _last_dataset
    key = (cfg.data, cfg.dataset, cfg.mnist1d_samples, cfg.shard, cfg.partition, cfg.seed)
    if _last_dataset is not None and _last_dataset[0] == key:
        return _last_dataset[1]
    if cfg.data:
        ds = ldata.load_npz(cfg.data)
    elif cfg.dataset != "mnist1d":
        raise ValueError(f"unknown dataset {cfg.dataset!r}: use mnist1d or --data FILE.npz")
    else:
        kw = {"num_samples": cfg.mnist1d_samples} if cfg.mnist1d_samples else {}
        full = ldata.load_mnist1d(**kw)
        i, n = cfg.shard_index()
        ds = ldata.shard(full, i, n, cfg.partition, cfg.seed)
    _last_dataset = (key, ds)
    return ds
