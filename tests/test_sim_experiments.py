"""A short version of every experiment of scripts/experiments.py (seconds each)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "experiments.py"


@pytest.fixture(scope="module")
def experiments():
    spec = importlib.util.spec_from_file_location("experiments", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["compare", "churn", "sybil", "variance", "scale", "vcmatrix", "vcregular"])
def test_quick_experiment(name, experiments, tmp_path) -> None:
    assert experiments.main([name, "--quick", "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / f"{name}.json").read_text())
    assert runs and all(r["command"].startswith("gossipnode sim") for r in runs)
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    md = (tmp_path / f"{name}.md").read_text()
    assert "| " in md and "gossipnode sim" in md
