"""gossipnode: peer-to-peer decentralized learning daemon."""
__version__ = "0.1.0"
