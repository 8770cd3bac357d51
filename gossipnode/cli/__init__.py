"""The command line: `gossipnode start | status | logs | cluster | sim | ...` (entry.py: the parser
and `main`). The top layer: it may import every other package; nothing imports it."""


def main(argv: list[str] | None = None) -> int:
    """The `gossipnode` console script (pyproject: gossipnode.cli:main)."""
    from .entry import main as entry_main
    return entry_main(argv)
