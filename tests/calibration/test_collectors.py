"""onnxcomp.calibration.collectors.TensorStats: bounded statistics and calibration ranges."""

import itertools
import subprocess
import sys

import numpy as np
import pytest

from onnxcomp.calibration.collectors import METHODS, TensorStats


def batches_of_growing_range(seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.uniform(-0.01, 0.01, (64, 8)).astype(np.float32),
        rng.standard_normal((128, 8)).astype(np.float32),
        (rng.standard_normal((32, 8)) * 300).astype(np.float32),
        np.array([[1024.0] * 8], np.float32),  # exactly a power of two times the bin count
        np.zeros((5, 8), np.float32),
    ]


def stats_of(batches, num_bins=2048):
    st = TensorStats(num_bins)
    for b in batches:
        st.update(b)
    return st


def test_histogram_counts_every_value():
    batches = batches_of_growing_range()
    st = stats_of(batches)
    total = sum(b.size for b in batches)
    assert st.count == total
    assert int(st.hist.sum()) == total
    assert st.hist.shape == (2048,) and st.hist.dtype == np.int64


@pytest.mark.parametrize("num_bins", [2048, 16])
def test_histogram_growth_is_exact_in_any_batch_order(num_bins):
    batches = batches_of_growing_range()
    one = stats_of([np.concatenate(batches)], num_bins)
    for order in itertools.permutations(range(len(batches))):
        several = stats_of([batches[i] for i in order], num_bins)
        assert several.width == one.width
        np.testing.assert_array_equal(several.hist, one.hist)


def test_histogram_bins_are_floor_of_abs_over_width():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(10000) * 3).astype(np.float32)
    st = stats_of([x[:10], x[10:]], num_bins=64)
    assert np.log2(st.width) == int(np.log2(st.width)), "bin width must be a power of two"
    assert np.abs(x).max() < st.width * 64 <= 2 * np.abs(x).max()
    expected = np.bincount(np.minimum((np.abs(x) / st.width).astype(np.int64), 63), minlength=64)
    np.testing.assert_array_equal(st.hist, expected)


def test_min_max_and_channel_absmax():
    batches = batches_of_growing_range()
    st = stats_of(batches)
    allx = np.concatenate(batches)
    assert st.min == float(allx.min()) and st.max == float(allx.max())
    np.testing.assert_array_equal(st.channel_absmax, np.abs(allx).max(axis=0))


def test_channel_absmax_uses_last_axis_of_nd_tensors():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5, 3, 7)).astype(np.float32)
    st = stats_of([x])
    np.testing.assert_array_equal(st.channel_absmax, np.abs(x).max(axis=(0, 1, 2)))


def test_channel_absmax_dropped_when_last_axis_is_dynamic():
    st = stats_of([np.ones((2, 3), np.float32), np.ones((2, 4), np.float32), np.ones((2, 3), np.float32)])
    assert st.channel_absmax is None
    assert st.count == 20 and st.hist.sum() == 20


def test_empty_batch_is_ignored_and_no_data_raises():
    st = TensorStats()
    st.update(np.zeros((0, 4), np.float32))
    assert st.count == 0
    with pytest.raises(ValueError, match="no data"):
        st.range("minmax")


def test_to_arrays_from_arrays_round_trip():
    batches = batches_of_growing_range()
    st = stats_of(batches[:3])
    back = TensorStats.from_arrays({k: np.array(v) for k, v in st.to_arrays().items()})
    assert (back.min, back.max, back.width, back.count, back.num_bins) == (
        st.min,
        st.max,
        st.width,
        st.count,
        st.num_bins,
    )
    np.testing.assert_array_equal(back.hist, st.hist)
    np.testing.assert_array_equal(back.channel_absmax, st.channel_absmax)
    for method in METHODS:
        assert back.range(method) == st.range(method)
    # the restored statistics keep accumulating exactly like the original
    for b in batches[3:]:
        st.update(b)
        back.update(b)
    np.testing.assert_array_equal(back.hist, st.hist)
    assert back.width == st.width and back.count == st.count


def test_round_trip_without_channel_stats():
    st = stats_of([np.ones((2, 3), np.float32), np.ones((2, 4), np.float32)])
    arrays = st.to_arrays()
    assert "channel_absmax" not in arrays
    assert TensorStats.from_arrays(arrays).channel_absmax is None


DISTRIBUTIONS = {
    "normal": lambda rng: rng.standard_normal(20000),
    "all_positive": lambda rng: rng.exponential(1.0, 20000),
    "all_negative": lambda rng: -rng.exponential(2.0, 20000),
    "relu": lambda rng: np.maximum(rng.standard_normal(20000), 0),
    "skewed": lambda rng: rng.standard_normal(20000) * 0.1 + 3.0,
    "huge_outliers": lambda rng: np.concatenate([rng.standard_normal(20000), [1e6, -3e5, 7e4]]),
    "tiny": lambda rng: rng.standard_normal(20000) * 1e-20,
    "zeros": lambda rng: np.zeros(1000),
    "single_value": lambda rng: np.full(100, 2.5),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_every_range_contains_zero_and_stays_within_data(method, dist):
    x = DISTRIBUTIONS[dist](np.random.default_rng(7)).astype(np.float32)
    st = stats_of(np.array_split(x, 4))
    lo, hi = st.range(method)
    assert np.isfinite(lo) and np.isfinite(hi)
    assert lo <= 0.0 <= hi
    assert min(st.min, 0.0) <= lo and hi <= max(st.max, 0.0)
    if method == "minmax":
        assert (lo, hi) == (min(st.min, 0.0), max(st.max, 0.0))
    if dist == "zeros":
        assert (lo, hi) == (0.0, 0.0)
    if dist in ("normal", "skewed", "single_value"):
        assert hi > 0  # a useful range, not collapsed to 0


@pytest.mark.parametrize("method", METHODS)
def test_all_positive_data_gives_zero_lower_bound(method):
    st = stats_of([np.random.default_rng(8).exponential(1.0, 5000).astype(np.float32)])
    lo, hi = st.range(method)
    assert lo == 0.0 and hi > 0


def test_percentile_clips_a_planted_outlier():
    x = np.random.default_rng(9).standard_normal(100_000).astype(np.float32)
    x[123] = 1000.0
    st = stats_of([x])
    assert st.range("minmax")[1] == 1000.0
    lo, hi = st.range("percentile", percentile=99.99)
    assert 3.0 < hi < 6.0, hi  # just past the normal data's 99.99th percentile, far below the outlier
    assert -6.0 < lo < -3.0, lo
    # percentile=100 keeps everything
    assert st.range("percentile", percentile=100.0)[1] == 1000.0


@pytest.mark.parametrize("method, n", [("entropy", 200_000), ("mse", 2_000_000)])
def test_entropy_and_mse_clip_huge_outliers(method, n):
    """On data whose bulk is far below two outliers, the range shrinks well below the max.

    For MSE the optimum is t ≈ Σ|outlier| / (2 + n / (12·127²)) (clipping cost of the two
    outliers vs. rounding cost n·(t/127)²/12), so n must be large for clipping to pay: with
    n = 2e6, t ≈ 9000 / 12.3 ≈ 730, far below max = 5000.
    """
    rng = np.random.default_rng(10)
    x = np.concatenate([rng.standard_normal(n) * 10, [5e3, -4e3]]).astype(np.float32)
    st = stats_of(np.array_split(x, 7))
    lo, hi = st.range(method)
    assert 0 < hi < 0.3 * st.max
    assert st.min * 0.3 < lo < 0
    if method == "mse":
        assert 400 < hi < 1100


def test_mse_threshold_depends_on_the_step():
    """Coarser steps (int8 symmetric: 127 per side) move the MSE-optimal threshold down."""
    st = stats_of([np.random.default_rng(11).exponential(1.0, 100_000).astype(np.float32)])
    assert st.range("mse", scheme="symmetric")[1] < st.range("mse", scheme="asymmetric")[1]


@pytest.mark.parametrize("method", ["mse", "entropy"])
def test_slightly_negative_data_keeps_the_asymmetric_step(method):
    """A GELU-like tensor (min -0.17) in uint8 spends almost all 255 steps on the positive side,
    so its threshold must be close to that of purely non-negative data, not the int8 one."""
    x = np.random.default_rng(12).exponential(1.0, 200_000).astype(np.float32)
    shifted = np.concatenate([x, -0.17 * np.random.default_rng(13).random(20_000).astype(np.float32)])
    signed, positive = stats_of([shifted]), stats_of([x])
    hi_signed = signed.range(method, scheme="asymmetric")[1]
    assert hi_signed > 0.9 * positive.range(method, scheme="asymmetric")[1]
    if method == "mse":  # KL barely depends on the level count on this data; squared error does
        assert hi_signed > signed.range(method, scheme="symmetric")[1]


def test_unknown_method_raises():
    st = stats_of([np.ones(4, np.float32)])
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        st.range("kl")


INF_LATER = """
import numpy as np
from onnxcomp.calibration.collectors import TensorStats
st = TensorStats()
st.update(np.array([1.0, -2.0], np.float32))
try:
    st.update(np.array([np.inf], np.float32))
except ValueError as exc:
    print("ValueError:", exc)
"""


def test_non_finite_values_fail_fast_with_value_error():
    # In a child process: the current code spins forever, and a thread could not be stopped.
    try:
        proc = subprocess.run([sys.executable, "-c", INF_LATER], capture_output=True, text=True, timeout=6)
    except subprocess.TimeoutExpired:
        pytest.fail("TensorStats.update hangs on a batch containing inf")
    assert proc.returncode == 0 and proc.stdout.startswith("ValueError:"), proc.stderr[-500:]
    for bad in (np.inf, np.nan):
        with pytest.raises(ValueError, match="(?i)finite|nan|inf"):
            TensorStats().update(np.array([1.0, bad], np.float32))
