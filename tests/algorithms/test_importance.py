"""Channel importance and the global selection of channels to remove."""

import numpy as np

from onnxcomp.algorithms import importance as imp


def test_magnitude_is_the_l2_norm_over_every_weight_a_channel_owns():
    producer = np.array([[3.0, 0.0], [0.0, 1.0]])
    consumer = np.array([[4.0], [0.0]])
    assert np.allclose(imp.magnitude([producer, consumer]), [5.0, 1.0])


def test_activation_aware_scores_follow_the_input_statistics():
    w = np.ones((3, 2))
    assert np.argmax(imp.wanda_sp(w, np.array([1.0, 9.0, 4.0]))) == 1
    assert np.allclose(imp.flap(w, np.array([1.0, 0.0, 2.0])), [2.0, 0.0, 4.0])


def test_standardize_and_global_selection_give_layers_different_ratios():
    low = imp.standardize(np.array([1.0, 2.0, 3.0, 100.0]))  # one strong channel, three weak
    even = imp.standardize(np.array([1.0, 2.0, 3.0, 4.0]))
    sel = imp.select_global([low, even], costs=[1, 1], target_params=3, min_keep=[1, 1])
    kept = [len(k) for k in sel.keep]
    assert sum(kept) == 5 and kept[0] != kept[1] and sel.removed_params == 3


def test_selection_respects_min_keep_costs_and_multiples():
    scores = [np.arange(16.0), np.arange(16.0)]
    sel = imp.select_global(scores, costs=[1, 10], target_params=10_000, min_keep=[2, 2])
    assert [len(k) for k in sel.keep] == [2, 2]
    assert imp.max_removable([16, 16], [1, 10], [2, 2]) == 14 + 140 == sel.removed_params
    sel8 = imp.select_global(scores, costs=[1, 1], target_params=10, min_keep=[8, 8], multiple=8)
    assert all(len(k) % 8 == 0 for k in sel8.keep)
    assert all(np.array_equal(k, np.sort(k)) for k in sel8.keep)
    # rounding up keeps the best-scored channels
    assert set(sel8.keep[0]) >= {15}


def _refit_error(w, x, keep):
    """Relative output error after the least-squares refit of the kept rows (no damping)."""
    from onnxcomp.algorithms.refit import Moments, least_squares, relative_error

    mo = Moments(x.T @ x / len(x), x.mean(axis=0))
    new, delta = least_squares(w, mo, keep, damp=0.0)
    return relative_error(w, mo, keep, new, delta)


def test_obs_removes_first_the_channel_whose_refit_error_is_least():
    """The first channel OBS removes (and each next one, given those before) is the one whose removal,
    the others refit by least squares with a bias, costs the least: checked by brute force."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 6)) @ rng.standard_normal((6, 10)) + rng.standard_normal((3000, 10)) * 0.3 + 1.0
    w = rng.standard_normal((10, 4))
    scores = imp.obs([(w, x.T @ x / len(x), x.mean(axis=0))], damp=0.0)
    order = np.argsort(scores)
    gone = []
    for position in range(8):
        left = [c for c in range(10) if c not in gone]
        errors = {c: _refit_error(w, x, np.array([k for k in left if k != c])) for c in left}
        assert order[position] == min(errors, key=errors.get)
        gone.append(order[position])
    assert sorted(scores) == list(range(10))


def test_obs_sees_a_duplicated_channel_that_per_channel_scores_keep():
    """Channels 0 and 1 are copies with the largest weights: FLAP ranks both highest, OBS removes
    one of them first (the other takes over its rows); in blocks (`repeat`) the same holds."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2000, 8))
    x[:, 1] = x[:, 0]
    w = rng.standard_normal((8, 3))
    w[:2] *= 4
    flap = imp.flap(w, x.var(axis=0))
    assert set(np.argsort(-flap)[:2]) == {0, 1}
    scores = imp.obs([(w, x.T @ x / len(x), x.mean(axis=0))], damp=1e-6)
    assert min(scores[0], scores[1]) == 0
    x[:, 2:4] = x[:, 0:2]  # in blocks of two rows: channel 1 copies channel 0
    w[2:4] *= 4
    blocks = imp.obs([(w, x.T @ x / len(x), x.mean(axis=0))], repeat=2, damp=1e-6)
    assert len(blocks) == 4 and min(blocks[0], blocks[1]) == 0


def test_obs_with_a_limit_removes_the_same_channels_first():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2000, 5)) @ rng.standard_normal((5, 12)) + rng.standard_normal((2000, 12)) * 0.2
    stats = [(rng.standard_normal((12, 3)), x.T @ x / len(x), x.mean(axis=0))]
    full, limited = imp.obs(stats, damp=1e-4), imp.obs(stats, damp=1e-4, limit=5)
    assert np.array_equal(np.argsort(full)[:5], np.argsort(limited)[:5])
    assert sorted(limited) == list(range(12))
