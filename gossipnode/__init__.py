"""gossipnode: peer-to-peer decentralized learning daemon.

    from gossipnode import Node, NodeConfig

`Node` and `NodeConfig` are imported on first use, so `import gossipnode` (and the CLI's
`--version`, `status`) stay light: torch is loaded only by what trains."""
from typing import Any

__version__ = "0.1.0"
__all__ = ["Node", "NodeConfig", "load_config", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Node":
        from gossipnode.runtime.node import Node
        return Node
    if name in ("NodeConfig", "load_config"):
        from gossipnode.runtime import config
        return getattr(config, name)
    raise AttributeError(f"module 'gossipnode' has no attribute {name!r}")
