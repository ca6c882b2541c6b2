"""Closed-form recovery: bias compensation and the least-squares refit of kept rows."""

import numpy as np

from onnxcomp.algorithms.refit import bias_compensation, least_squares, relative_error


def _stats(x):
    return x.T @ x / len(x), x.mean(axis=0)


def test_refit_recovers_a_redundant_channel_exactly_and_error_matches_the_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4))
    x = np.hstack([x, (x[:, :1] * 2 - x[:, 1:2] + 0.5)])  # channel 4 = 2·x0 − x1 + 0.5
    w = rng.standard_normal((5, 3))
    h, m = _stats(x)
    keep = np.arange(4)
    before = relative_error(w, h, m, keep, w[keep], np.zeros(3))
    empirical = np.sum((x @ w - x[:, keep] @ w[keep]) ** 2) / np.sum((x @ w) ** 2)
    assert np.isclose(before, empirical) and before > 0.05
    new, delta = least_squares(w, h, m, keep, damp=0.0)
    assert relative_error(w, h, m, keep, new, delta) < 1e-10
    assert np.allclose(x[:, keep] @ new + delta, x @ w, atol=1e-8)


def test_bias_compensation_removes_a_constant_channel_exactly():
    rng = np.random.default_rng(1)
    x = np.hstack([rng.standard_normal((200, 3)), np.full((200, 1), 3.0)])
    w = rng.standard_normal((4, 2))
    h, m = _stats(x)
    keep = np.arange(3)
    delta = bias_compensation(w, m, keep)
    assert np.allclose(delta, 3.0 * w[3])
    assert relative_error(w, h, m, keep, w[keep], delta) < 1e-12 < relative_error(w, h, m, keep, w[keep], 0 * delta)
