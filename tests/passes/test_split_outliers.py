"""split_outliers: outlier input channels go to a float side path, exactly; int8 then errs less."""

import numpy as np
import pytest

from onnxcomp.api import compress
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes.split_outliers import outlier_channels
from tests.passes.test_plan_fallback import feeds, outlier_mlp


def split_details(result) -> list[dict]:
    return next(p["details"] for p in result.report["passes"] if p["pass"] == "split_outliers")["split"]


def relative_error(tiny, reference, model) -> float:
    errors = []
    for feed in feeds():
        want, got = tiny.run(reference, feed)[0], tiny.run(model, feed)[0]
        errors.append(np.linalg.norm(got - want) / np.linalg.norm(want))
    return float(np.mean(errors))


def test_outlier_channels_are_the_top_ones_down_to_the_first_gap():
    assert outlier_channels(np.array([1.0, 30.0, 2.0, 1.5]), 2, 2.0).tolist() == [1]
    assert outlier_channels(np.array([20.0, 1.0, 15.0, 3.0, 2.0]), 4, 2.0).tolist() == [0, 2]  # 15 > 2 × 3
    assert outlier_channels(np.array([3.0, 2.0, 1.8, 1.5]), 4, 2.0).size == 0  # no gap of 2
    assert outlier_channels(np.array([9.0, 8.0, 7.0, 1.0]), 2, 2.0).size == 0  # the gap is past max_channels


def test_the_split_computes_the_same_function(tiny):
    model = outlier_mlp(tiny)
    result = compress(model, [("calibrate", {}), ("split_outliers", {})], feeds(), use_cache=False)
    assert [(s["group"], s["channels"]) for s in split_details(result)] == [("second", [0])]
    assert relative_error(tiny, model, result.model) < 1e-5
    second = tiny.node_named(result.model, "second")
    mask = tiny.producer(result.model, second.input[0])
    assert mask.op_type == "Mul" and tiny.initializer(result.model, mask.input[1]).tolist() == [0.0] + [1.0] * 31
    assert tiny.initializer(result.model, second.input[1])[0].tolist() == [0.0] * 16  # the outlier row left W


def test_int8_after_the_split_errs_far_less_and_the_side_path_stays_float(tiny):
    model = outlier_mlp(tiny)
    plain = compress(model, [("calibrate", {}), ("quantize_qdq", {})], feeds(), use_cache=False)
    recipe = [("calibrate", {}), ("split_outliers", {}), ("calibrate", {}), ("quantize_qdq", {})]
    split = compress(model, recipe, feeds(), use_cache=False)
    assert relative_error(tiny, model, split.model) < 0.1 * relative_error(tiny, model, plain.model)
    side = tiny.node_named(split.model, "second_outlier_side")
    assert tiny.producer(split.model, side.input[0]).op_type == "Gather"  # not DequantizeLinear: float
    assert tiny.producer(split.model, side.input[1]) is None  # a float initializer


def test_the_mask_folds_into_a_scale_mul_that_feeds_only_the_layer(tiny):
    """h → Mul(h, c) → second (SmoothQuant's inserted Mul): no second Mul; the side path reads h
    with c folded into its rows, so the function is unchanged."""
    base = outlier_mlp(tiny)
    h = tiny.helper
    c = np.linspace(0.5, 2.0, 32).astype(np.float32)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        h.make_node("Mul", ["h", "c"], ["hs"], name="scale"),
        h.make_node("MatMul", ["hs", "w2"], ["y"], name="second"),
    ]
    inits = {"w1": tiny.initializer(base, "w1"), "w2": tiny.initializer(base, "w2"), "c": c}
    model = tiny.make_model(nodes, [("x", [4, 32])], [("y", [4, 16])], inits, infer_shapes=True)
    result = compress(model, [("calibrate", {}), ("split_outliers", {})], feeds(), use_cache=False)
    assert tiny.op_types(result.model).count("Mul") == 1
    folded = tiny.initializer(result.model, tiny.node_named(result.model, "scale").input[1])
    assert folded[0] == 0.0 and np.array_equal(folded[1:], c[1:])
    assert relative_error(tiny, model, result.model) < 1e-5


def test_without_outliers_nothing_changes(tiny):
    h = tiny.helper
    w = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    model = tiny.make_model([h.make_node("MatMul", ["x", "w"], ["y"])], [("x", [4, 32])], [("y", [4, 16])], {"w": w})
    result = compress(model, [("calibrate", {}), ("split_outliers", {})], feeds(), use_cache=False)
    entry = next(p for p in result.report["passes"] if p["pass"] == "split_outliers")
    assert entry["details"]["split"] == [] and not entry["modified"]


@pytest.mark.parametrize("options", [{"max_channels": 0}, {"ratio": 1.0}, {"ratio": "big"}, {"max_channels": 2.5}])
def test_bad_options_are_one_line(tiny, options):
    with pytest.raises(OnnxcompError, match="split_outliers"):
        compress(outlier_mlp(tiny), [("calibrate", {}), ("split_outliers", options)], feeds(), use_cache=False)
