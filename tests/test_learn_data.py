import random

import numpy as np
import pytest

from gossipnode.learn.data import DataError, Dataset, load_mnist1d, load_npz, partition, save_shards, shard


def _labels(n: int = 1000, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet:0.1", "dirichlet:1.0", "dirichlet:100"])
def test_partition_deterministic_covering_nonempty(scheme: str) -> None:
    y = _labels()
    parts = partition(y, 8, scheme, seed=3)
    again = partition(y, 8, scheme, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert all(len(p) > 0 for p in parts)
    allidx = np.concatenate(parts)
    assert len(allidx) == len(y) and np.array_equal(np.sort(allidx), np.arange(len(y)))  # disjoint + covering
    other = partition(y, 8, scheme, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_partition_iid_balanced_and_dirichlet_skewed() -> None:
    y = _labels(2000)
    sizes = [len(p) for p in partition(y, 8, "iid", 0)]
    assert max(sizes) - min(sizes) <= 1
    # alpha = 0.1: most nodes are dominated by few classes
    top_share = [np.bincount(y[p], minlength=10).max() / len(p) for p in partition(y, 8, "dirichlet:0.1", 0)]
    assert np.median(top_share) > 0.4


def test_partition_tiny_alpha_many_nodes_still_nonempty() -> None:
    parts = partition(_labels(60), 50, "dirichlet:0.01", seed=1)
    assert all(len(p) > 0 for p in parts)
    assert sum(len(p) for p in parts) == 60


@pytest.mark.parametrize("scheme", ["bogus", "dirichlet:", "dirichlet:-1", "dirichlet:x"])
def test_partition_bad_scheme(scheme: str) -> None:
    with pytest.raises(DataError):
        partition(_labels(), 4, scheme, 0)


def test_partition_too_few_samples() -> None:
    with pytest.raises(DataError):
        partition(np.zeros(3, dtype=int), 4, "iid", 0)


def _ds() -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(
        x=rng.normal(size=(100, 6)).astype(np.float32),
        y=rng.integers(0, 4, 100),
        x_test=rng.normal(size=(20, 6)).astype(np.float32),
        y_test=rng.integers(0, 4, 20),
        num_classes=5,
        input_shape=(6,),
    )


def test_shard_and_save_shards_roundtrip(tmp_path) -> None:
    ds = _ds()
    s2 = shard(ds, 2, 4, "iid", seed=0)
    assert len(s2) == 25 and s2.x_test is ds.x_test
    paths = save_shards(ds, 4, "iid", 0, tmp_path)
    assert [p.name for p in paths] == ["node_0.npz", "node_1.npz", "node_2.npz", "node_3.npz"]
    loaded = load_npz(paths[2])
    np.testing.assert_array_equal(loaded.x, s2.x)
    np.testing.assert_array_equal(loaded.y_test, ds.y_test)
    assert loaded.num_classes == 5 and loaded.input_shape == (6,)


def test_load_npz_without_test_split(tmp_path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((5, 2, 3)), y=np.array([0, 1, 2, 1, 0]))
    ds = load_npz(p)
    assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
    assert ds.input_shape == (2, 3) and ds.num_classes == 3 and len(ds.y_test) == 0


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"y": np.zeros(3, int)}, "missing array 'x'"),
        ({"x": np.zeros((3, 2))}, "missing array 'y'"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(4, int)}, "has 3 samples"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3, int), "x_test": np.zeros((1, 2))}, "together"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3)}, "integer"),
        ({"x": np.zeros((3, 2)), "y": -np.ones(3, int)}, "negative"),
        (
            {
                "x": np.zeros((3, 2)),
                "y": np.zeros(3, int),
                "x_test": np.zeros((2, 5)),
                "y_test": np.zeros(2, int),
            },
            "shape",
        ),
        ({"x": np.array([{"a": 1}] * 3, dtype=object), "y": np.zeros(3, int)}, "pickle"),
    ],
)
def test_load_npz_errors(tmp_path, arrays: dict, message: str) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataError, match=message):
        load_npz(p)


def test_load_npz_missing_file_and_garbage(tmp_path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_npz(tmp_path / "nope.npz")
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError):
        load_npz(bad)


def test_load_mnist1d_cached_and_global_rng_restored(tmp_path) -> None:
    np.random.seed(5)
    random.seed(5)
    expected = (np.random.random(), random.random())
    np.random.seed(5)
    random.seed(5)
    ds = load_mnist1d(num_samples=200, seed=1, cache_dir=tmp_path)
    assert (np.random.random(), random.random()) == expected  # mnist1d's reseeding undone
    assert ds.x.shape == (160, 40) and ds.x_test.shape == (40, 40) and ds.num_classes == 10
    assert (tmp_path / "mnist1d_n200_s1.npz").exists()
    again = load_mnist1d(num_samples=200, seed=1, cache_dir=tmp_path)
    np.testing.assert_array_equal(ds.x, again.x)
    fresh = load_mnist1d(num_samples=200, seed=1, use_cache=False)
    np.testing.assert_array_equal(ds.y, fresh.y)
