"""The package's architecture, checked: each layer imports only layers below it (TYPE_CHECKING
imports included), no module imports itself back through others (no cycles), and no module is
over 400 lines. The layers (README, "How it is built"):

    core < wire < learn < transport < api < runtime < sim < cli
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "gossipnode"
LAYERS = {"core": 0, "wire": 1, "learn": 2, "transport": 3, "api": 4, "runtime": 5, "sim": 6, "cli": 7}
MAX_LINES = 400


def _module(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    mod = _module(path, root)
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("gossipnode")}
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else [])) if node.level else (node.module or "")
            if name.startswith("gossipnode"):
                out.add(name)
                out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = {_module(p, root): p for p in (root / "gossipnode").rglob("*.py")}
    graph = {}
    for m, p in mods.items():
        # an import of `a.b.c` means the module a.b.c, else its package a.b (a name imported from it)
        graph[m] = {i if i in mods else i.rsplit(".", 1)[0] for i in _imports(p, root)} & set(mods) - {m}
    return graph


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _upward(root: Path = ROOT) -> list[str]:
    bad = []
    for m, deps in _graph(root).items():
        lm = _layer(m)
        for d in deps:
            ld = _layer(d)
            if lm is None or ld is None or m.split(".")[1] == d.split(".")[1]:
                continue
            if ld >= lm:
                bad.append(f"{m} imports {d}")
    return sorted(bad)


def test_each_layer_imports_only_the_layers_below() -> None:
    bad = _upward()
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def _cycles(root: Path = ROOT) -> list[list[str]]:
    graph = _graph(root)
    # package __init__ modules importing their own submodules (lazy re-exports) are not cycles
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d.startswith(m + ".") or m == "gossipnode":
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return cycles


def test_no_import_cycles() -> None:
    cycles = _cycles()
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    # the two checks above can fail: a small package where core imports the runtime and back
    for mod, src in {"__init__": "", "core/__init__": "", "core/a": "from gossipnode.runtime import b\n",
                     "runtime/__init__": "", "runtime/b": "from ..core import a\n"}.items():
        f = tmp_path / "gossipnode" / f"{mod}.py"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(src)
    assert "gossipnode.core.a imports gossipnode.runtime.b" in _upward(tmp_path)
    assert _cycles(tmp_path) == [["gossipnode.core.a", "gossipnode.runtime.b", "gossipnode.core.a"]]


def test_no_module_is_over_400_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def test_core_is_sans_io() -> None:
    """core/ never imports asyncio, sockets, a clock, numpy or torch (DESIGN: time is passed in)."""
    banned = {"asyncio", "aiohttp", "aiomqtt", "socket", "time", "torch", "numpy", "threading", "uvloop"}
    bad = []
    for p in (PKG / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{p.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert not bad, bad
