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
