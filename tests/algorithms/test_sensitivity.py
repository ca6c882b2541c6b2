import numpy as np

from onnxcomp.algorithms.sensitivity import (
    kl_from_log_probs,
    log_softmax,
    relative_squared_error,
    spearman,
    weighted_error,
)


def kl_divergence(reference_logits, logits) -> float:
    return kl_from_log_probs(log_softmax(reference_logits), logits)


def test_weighted_error_is_the_output_error_on_the_calibration_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16))
    delta = rng.normal(size=(16, 8))
    hessian = x.T @ x / len(x)
    expected = float(((x @ delta) ** 2).sum() / len(x))
    assert np.isclose(weighted_error(delta, hessian), expected)


def test_kl_is_zero_for_equal_logits_and_positive_otherwise():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    assert abs(kl_divergence(logits, logits)) < 1e-9
    assert abs(kl_divergence(logits, logits + 3.0)) < 1e-9  # a constant shift is the same distribution
    other = logits + rng.normal(size=logits.shape).astype(np.float32)
    p = np.exp(logits[0, 0] - logits[0, 0].max())
    p /= p.sum()
    q = np.exp(other[0, 0] - other[0, 0].max())
    q /= q.sum()
    assert np.isclose(kl_divergence(logits[:1, :1], other[:1, :1]), np.sum(p * np.log(p / q)), rtol=1e-5)


def test_relative_squared_error_and_spearman():
    ref = np.array([3.0, 4.0])
    assert np.isclose(relative_squared_error(ref, ref * 1.1), 0.01)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert np.isclose(spearman([1, 2, 2, 3], [1, 2, 2, 3]), 1.0)
