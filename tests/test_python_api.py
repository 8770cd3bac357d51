"""The README's Python API example, run as a user would: a script that embeds a node, runs two
rounds alone with sample size 1 and stops. Also: `import gossipnode` stays light."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, free_ports


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- example: python-api[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert m, "the README lost its Python API example"
    return m.group(1)


@pytest.mark.slow
def test_readme_example_embeds_a_node(tmp_path: Path) -> None:
    code = readme_example()
    assert "port=8470" in code
    (tmp_path / "example.py").write_text(code.replace("port=8470", f"port={free_ports(1)[0]}"))
    p = subprocess.run([sys.executable, "example.py"], capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout.splitlines()
    assert "training round 1" in out and "training round 2" in out, p.stdout
    assert any(re.fullmatch(r"round 3: accuracy 0\.\d{3}", line) for line in out), p.stdout
    assert out[-1] == "rounds trained: 2", p.stdout
    assert (tmp_path / "example-state" / "checkpoint.json").exists()


def test_import_is_light() -> None:
    code = ("import sys, gossipnode; assert gossipnode.NodeConfig().port == 8470; "
            "print(sorted(m for m in ('torch', 'numpy', 'aiohttp') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr
