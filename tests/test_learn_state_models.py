import numpy as np
import pytest
import torch
from torch import nn

from gossipnode.learn.models import build_model, count_parameters
from gossipnode.learn.state import add, flatten, is_weight, load_into, state_from_module, sub


@pytest.mark.parametrize(
    ("name", "shape"), [("cnn1d", (40,)), ("mlp", (40,)), ("logreg", (40,)), ("gnlenet", (3, 32, 32))]
)
def test_models_build_and_forward(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(name, shape, 10, seed=0)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)


def test_gnlenet_size_and_groupnorm() -> None:
    model = build_model("gnlenet", (3, 32, 32), 10, seed=0)
    assert 80_000 <= count_parameters(model) <= 95_000
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_seeded_init_identical_and_rng_untouched() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = state_from_module(build_model("cnn1d", (40,), 10, seed=7))
    b = state_from_module(build_model("cnn1d", (40,), 10, seed=7))
    c = state_from_module(build_model("cnn1d", (40,), 10, seed=8))
    assert torch.rand(1) == expected_next  # building a model does not consume global RNG
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_factory_spec() -> None:
    model = build_model("gossipnode.learn.models:LogReg", (5,), 3, seed=0)
    assert model(torch.zeros(2, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("nope", (5,), 3, seed=0)
    with pytest.raises(ValueError, match="cannot load"):
        build_model("gossipnode.learn.models:Missing", (5,), 3, seed=0)


def test_state_roundtrip_and_arithmetic() -> None:
    bn = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    st = state_from_module(bn)
    names = {k for k, v in st.items() if is_weight(k, v)}
    assert names == {"0.weight", "0.bias", "1.weight", "1.bias"}  # running stats are buffers
    st["0.weight"] += 1.0
    assert not np.array_equal(st["0.weight"], state_from_module(bn)["0.weight"])  # a copy, not a view
    load_into(bn, st)
    assert np.array_equal(state_from_module(bn)["0.weight"], st["0.weight"])

    other = state_from_module(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)))
    other["1.num_batches_tracked"] = np.array(5, dtype=np.int64)
    d = sub(st, other)
    assert d["0.weight"].dtype == np.float32
    assert d["1.num_batches_tracked"] == st["1.num_batches_tracked"]  # integer buffer from a
    back = add(other, d)
    np.testing.assert_allclose(back["0.weight"], st["0.weight"], atol=1e-6)
    assert flatten(st).size == 4 * 3 + 3 + 3 + 3
