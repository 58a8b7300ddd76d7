"""Streaming moments (chunked, merged, all-reduced) and the seeded reservoir sample."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lakd.analysis import Moments, ReservoirSample
from lakd.errors import LakdError


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((1000, 12)) @ rng.standard_normal((12, 12)) + 5.0


def test_chunked_moments_equal_one_shot(data):
    streamed = Moments()
    for start in range(0, len(data), 97):
        streamed.update(data[start : start + 97])
    assert streamed.n == len(data)
    np.testing.assert_allclose(streamed.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(streamed.covariance, np.cov(data, rowvar=False), rtol=1e-10)
    np.testing.assert_allclose(streamed.total_variance, np.trace(np.cov(data, rowvar=False)), rtol=1e-10)


def test_merge_equals_union(data):
    left, right = Moments.from_array(data[:300]), Moments.from_array(data[300:])
    merged = left.merge(right)
    union = Moments.from_array(data)
    np.testing.assert_allclose(merged.mean, union.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.covariance, union.covariance, rtol=1e-10)
    assert Moments().merge(Moments.from_array(data)).n == len(data)  # empty accumulator merges


def test_torch_chunks_accepted(data):
    moments = Moments.from_array(torch.from_numpy(data).float())
    np.testing.assert_allclose(moments.mean, data.astype(np.float32).mean(axis=0), rtol=1e-5)


def test_large_offset_keeps_precision():
    # mean 1e8, unit variance: the naive sum of outer products loses every digit in float64
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 3)) + 1e8
    streamed = Moments()
    for chunk in np.array_split(x, 13):
        streamed.update(chunk)
    reference = np.cov(x - 1e8, rowvar=False)
    np.testing.assert_allclose(streamed.covariance, reference, atol=1e-6)


def test_mean_only_moments_refuse_covariance(data):
    moments = Moments.from_array(data, covariance=False)
    np.testing.assert_allclose(moments.mean, data.mean(axis=0))
    with pytest.raises(LakdError, match="mean only"):
        moments.covariance  # noqa: B018
    with pytest.raises(LakdError, match="mean-only"):
        Moments().merge(moments)


def test_bad_rows_are_errors(data):
    bad = data.copy()
    bad[503, 2] = np.nan
    moments = Moments(name="image").update(bad[:500])
    with pytest.raises(LakdError, match=r"image: 1 row\(s\) contain NaN or Inf \(first at row 503\)"):
        moments.update(bad[500:])
    with pytest.raises(LakdError, match="dimension 5"):
        Moments(name="image").update(data).update(np.ones((2, 5)))
    with pytest.raises(LakdError, match="at least 2 rows, got 1"):
        Moments.from_array(data[:1]).covariance  # noqa: B018


def test_reservoir_is_independent_of_chunking_and_pairs_streams(data):
    whole = ReservoirSample(50, seed=3).update(data)
    chunked = ReservoirSample(50, seed=3)
    for chunk in np.array_split(data, 17):
        chunked.update(chunk)
    np.testing.assert_array_equal(whole.indices, chunked.indices)
    np.testing.assert_array_equal(whole.rows, data[whole.indices])
    other = ReservoirSample(50, seed=3).update(data[:, :4] * 2)  # same N, same seed: same items
    np.testing.assert_array_equal(other.indices, whole.indices)
    assert not np.array_equal(ReservoirSample(50, seed=4).update(data).indices, whole.indices)
    small = ReservoirSample(5000, seed=0).update(data)
    np.testing.assert_array_equal(small.indices, np.arange(len(data)))


def test_reservoir_is_uniform():
    n, size, trials = 40, 8, 3000
    counts = np.zeros(n)
    for seed in range(trials):
        sample = ReservoirSample(size, seed=seed)
        for chunk in np.array_split(np.arange(n, dtype=float)[:, None], 3):
            sample.update(chunk)
        counts[sample.indices] += 1
    expected = trials * size / n  # 600; binomial sd ~ 22
    assert np.abs(counts - expected).max() < 6 * np.sqrt(expected)


def _all_reduce_worker(rank: int, world: int, init_file: str, data: np.ndarray) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        parts = np.array_split(data, [700])  # uneven shards
        local = Moments.from_array(parts[rank]).all_reduce()
        union = Moments.from_array(data)
        assert local.n == len(data)
        np.testing.assert_allclose(local.mean, union.mean, rtol=1e-12)
        np.testing.assert_allclose(local.covariance, union.covariance, rtol=1e-10)
    finally:
        dist.destroy_process_group()


def test_all_reduce_across_ranks_equals_union(tmp_path, data):
    # fork: the workers inherit the imported modules instead of importing torch again
    mp.start_processes(
        _all_reduce_worker, args=(2, str(tmp_path / "init"), data), nprocs=2, start_method="fork"
    )
