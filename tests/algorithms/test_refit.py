"""Closed-form recovery: bias compensation and the least-squares refit of kept rows."""

import numpy as np

from onnxcomp.algorithms.refit import Moments, bias_compensation, least_squares, relative_error


def _stats(x):
    return Moments(x.T @ x / len(x), x.mean(axis=0))


def test_refit_recovers_a_redundant_channel_exactly_and_error_matches_the_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 4))
    x = np.hstack([x, (x[:, :1] * 2 - x[:, 1:2] + 0.5)])  # channel 4 = 2·x0 − x1 + 0.5
    w = rng.standard_normal((5, 3))
    mo = _stats(x)
    keep = np.arange(4)
    before = relative_error(w, mo, keep, w[keep], np.zeros(3))
    empirical = np.sum((x @ w - x[:, keep] @ w[keep]) ** 2) / np.sum((x @ w) ** 2)
    assert np.isclose(before, empirical) and before > 0.05
    new, delta = least_squares(w, mo, keep, damp=0.0)
    assert relative_error(w, mo, keep, new, delta) < 1e-10
    assert np.allclose(x[:, keep] @ new + delta, x @ w, atol=1e-8)


def test_bias_compensation_removes_a_constant_channel_exactly():
    rng = np.random.default_rng(1)
    x = np.hstack([rng.standard_normal((200, 3)), np.full((200, 1), 3.0)])
    w = rng.standard_normal((4, 2))
    mo = _stats(x)
    keep = np.arange(3)
    delta = bias_compensation(w, mo, keep)
    assert np.allclose(delta, 3.0 * w[3])
    assert relative_error(w, mo, keep, w[keep], delta) < 1e-12 < relative_error(w, mo, keep, w[keep], 0 * delta)


def test_sequential_moments_refit_against_the_unpruned_input():
    """x̃ is x with an error on channel 0 (an earlier layer was pruned): the refit with cross
    moments reconstructs x_ref·W from x̃, which the one-shot moments of x̃ cannot."""
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((400, 3))
    x = ref.copy()
    x[:, 0] = 0.5 * ref[:, 0]
    w = rng.standard_normal((3, 2))
    keep = np.arange(3)
    mo = Moments(x.T @ x / 400, x.mean(0), x.T @ ref / 400, ref.T @ ref / 400, ref.mean(0))
    new, delta = least_squares(w, mo, keep, damp=0.0)
    assert np.allclose(x @ new + delta, ref @ w, atol=1e-8)
    assert relative_error(w, mo, keep, new, delta) < 1e-10 < relative_error(w, mo, keep, w, 0 * delta)
