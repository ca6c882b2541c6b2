"""OutputComparison: padding positions do not count; KL for logits, relative L2 otherwise."""

import numpy as np

from onnxcomp.precision.measure import OutputComparison


def test_padded_positions_are_left_out():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], np.int64)
    act = ref.copy()
    act[mask == 0] += 100.0  # garbage where the mask says padding
    comparison = OutputComparison(["last_hidden_state"], [{"attention_mask": mask}], [[ref]])
    assert comparison.metric == "relative_l2" and comparison.error([[act]]) == 0.0
    act[0, 0] += 1.0
    assert comparison.error([[act]]) > 0.0


def test_logits_use_kl():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((1, 3, 7)).astype(np.float32)
    comparison = OutputComparison(["logits"], [{}], [[logits]])
    assert comparison.metric == "kl"
    assert abs(comparison.error([[logits + 2.0]])) < 1e-9  # a constant shift: the same distribution
    assert comparison.error([[logits * 3.0]]) > 0.01
