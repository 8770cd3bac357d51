"""Gossip learning with independent initialisations over real HTTP: variance correction keeps
per-layer weight variance near its initial value (vc-always) or well above a plain merge's
(the default vc, which stops correcting once the models agree); a plain merge shrinks it."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from gossipnode.runtime import checkpoint
from gossipnode.learn.models import build_model
from gossipnode.learn.state import is_weight, state_from_module
from gossipnode.wire.tensors import from_raw

pytestmark = pytest.mark.slow
ROUNDS = 16
ARGS = ["--protocol", "gossip", "--gossip-interval", "0.7", "--independent-init", "--bootstrap-wait", "1",
        "--rounds", str(ROUNDS), "--filter", "none", "--lr", "0.05", "--batch-size", "250"]


def run(node_procs, correct: str) -> tuple[float, float]:
    nodes = node_procs(4, ARGS + ["--correct", correct])
    for n in nodes:
        n.wait_up()
    # A node whose peers have all reached the model age and left has no one to gossip with;
    # once most have finished, the rest are asked to leave (SIGTERM writes their checkpoint).
    deadline = time.monotonic() + 240
    while sum(n.proc.poll() is not None for n in nodes) < len(nodes) - 1:
        assert time.monotonic() < deadline, nodes[0].log()
        time.sleep(0.5)
    time.sleep(3)
    for n in nodes:
        assert n.terminate() == 0, n.log()
    init = state_from_module(build_model("cnn1d", (40,), 10, seed=123))
    ratios, accs, merged = [], [], 0
    for n in nodes:
        model, meta = checkpoint.load(n.state_dir)
        # A node that falls behind can be left with no peer before it merged much (seen in CI:
        # model age 4 when the other three had left at 16); it says nothing about merging.
        if meta["round"] < ROUNDS // 2:
            continue
        merged += 1
        for t in model:
            a = from_raw(t)
            if is_weight(t.name, a) and a.size > 100:
                ratios.append(float(a.var() / init[t.name].var()))
        accs.append(json.loads((n.state_dir / "status.json").read_text())["last_eval"]["accuracy"])
    assert merged >= 3, f"only {merged} of 4 nodes reached model age {ROUNDS // 2}"
    return float(np.exp(np.mean(np.log(ratios)))), float(np.mean(accs))


def test_variance_correction_keeps_variance_and_accuracy(node_procs) -> None:
    # Large batches keep local training short, so merges dominate the weights' variance.
    # Measured when written (4 nodes, model age 16): vc ratio 1.20, accuracy 0.228;
    # none ratio 0.31, accuracy 0.117 (geometric mean over weight tensors, vs. the init variance).
    # The default rule (vc) corrects only while the merged models are uncorrelated, so it keeps
    # part of the variance; the paper's rule (vc-always) all of it. How much part depends on how
    # many merges each node did while the models were still apart (timing of 4 real processes):
    # vc / none measured 2.5 (0.68 / 0.27), 1.65, 2.05, and 1.46 on a loaded machine (none kept
    # 0.48: fewer merges). Without any correction vc would be 1.0x none; 1.3x separates the two.
    # Accuracy after 16 short rounds is near chance (0.1) and noisy: 4 runs of vc 0.12-0.18,
    # none 0.11-0.16 (vc - none: -0.04 once in CI, +0.05..+0.06 otherwise, sd about 0.04), so the
    # accuracy checks only say the correction did not do worse than no correction by 2 sd.
    always_ratio, always_acc = run(node_procs, "vc-always")
    vc_ratio, vc_acc = run(node_procs, "vc")
    none_ratio, none_acc = run(node_procs, "none")
    print(f"vc-always: variance ratio {always_ratio:.3f}, accuracy {always_acc:.4f}; "
          f"vc: variance ratio {vc_ratio:.3f}, accuracy {vc_acc:.4f}; "
          f"none: variance ratio {none_ratio:.3f}, accuracy {none_acc:.4f}")
    assert 0.75 <= always_ratio <= 1.6
    assert none_ratio < 0.7 * always_ratio
    assert always_acc >= none_acc - 0.08
    assert vc_ratio >= 1.3 * none_ratio and vc_ratio <= 1.6
    assert vc_acc >= none_acc - 0.08
