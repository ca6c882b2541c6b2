"""plan_fallback: the layer whose int8 error is largest stays float, and quantize_qdq honours it."""

import numpy as np
import pytest

from onnxcomp.api import compress
from onnxcomp.errors import OnnxcompError


def outlier_mlp(tiny):
    """x → first (MatMul) → h → second (MatMul) → y, where one channel of h is 1000× the rest:
    per-tensor int8 on h (the second layer's input) loses every other channel."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 32)).astype(np.float32)
    w1[:, 0] *= 1000.0
    w2 = rng.standard_normal((32, 16)).astype(np.float32)
    w2[0] *= 1e-3  # the outlier channel's contribution stays comparable
    h = tiny.helper
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        h.make_node("MatMul", ["h", "w2"], ["y"], name="second"),
    ]
    return tiny.make_model(nodes, [("x", [4, 32])], [("y", [4, 16])], {"w1": w1, "w2": w2}, infer_shapes=True)


def feeds():
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]


RECIPE = [("calibrate", {}), ("plan_fallback", {"max_fallback": 0.5}), ("quantize_qdq", {})]


def test_the_most_sensitive_layer_stays_float(tiny):
    result = compress(outlier_mlp(tiny), RECIPE, feeds(), use_cache=False)
    details = next(p["details"] for p in result.report["passes"] if p["pass"] == "plan_fallback")
    errors = {layer["node"]: layer["measured_error"] for layer in details["layers"]}
    assert errors["second"] > 10 * errors["first"] > 0
    assert details["fallback"] == ["second"]
    assert details["measured_error_mixed"] < details["measured_error_all_int8"]
    second = tiny.node_named(result.model, "second")
    assert tiny.producer(result.model, second.input[0]).op_type == "MatMul"  # float input: no DequantizeLinear
    first = tiny.node_named(result.model, "first")
    assert tiny.producer(result.model, first.input[0]).op_type == "DequantizeLinear"


def test_no_fallback_allowed_quantizes_everything(tiny):
    recipe = [("calibrate", {}), ("plan_fallback", {"max_fallback": 0.0}), ("quantize_qdq", {})]
    result = compress(outlier_mlp(tiny), recipe, feeds(), use_cache=False)
    details = next(p["details"] for p in result.report["passes"] if p["pass"] == "plan_fallback")
    assert details["fallback"] == [] and details["measured_error_mixed"] == details["measured_error_all_int8"]


@pytest.mark.parametrize("cap, fallback", [(0.3, []), (0.34, ["second"])])
def test_the_float_layers_weights_are_capped(tiny, cap, fallback):
    """second holds 512 of the 1,536 weights (33 %): a 30 % cap keeps it int8, a 34 % one lets it go."""
    recipe = [("calibrate", {}), ("plan_fallback", {"max_fallback": 0.5, "max_fallback_weights": cap})]
    result = compress(outlier_mlp(tiny), recipe, feeds(), use_cache=False)
    details = next(p["details"] for p in result.report["passes"] if p["pass"] == "plan_fallback")
    assert details["fallback"] == fallback


@pytest.mark.parametrize(
    "options",
    [
        {"error_ratio": 1.5},
        {"max_fallback": -0.1},
        {"max_fallback_weights": 2},
        {"method": "best"},
        {"weight_rounding": "best"},
    ],
)
def test_bad_options_are_one_line(tiny, options):
    with pytest.raises(OnnxcompError, match="plan_fallback"):
        compress(outlier_mlp(tiny), [("calibrate", {}), ("plan_fallback", options)], feeds(), use_cache=False)


def test_auto_gives_each_layer_the_activation_ranges_that_err_less(tiny):
    recipe = [("calibrate", {}), ("plan_fallback", {"max_fallback": 0.0, "activations": "auto"}), ("quantize_qdq", {})]
    result = compress(outlier_mlp(tiny), recipe, feeds(), use_cache=False)
    details = next(p["details"] for p in result.report["passes"] if p["pass"] == "plan_fallback")
    for layer in details["layers"]:
        assert layer["mode"] == min(("static", "dynamic"), key=lambda m: layer[f"{m}_error"])
        assert layer["measured_error"] == min(layer["static_error"], layer["dynamic_error"]) > 0
    assert details["measured_error_mixed"] <= details["measured_error_all_int8"] * 1.05
    for name in ("first", "second"):
        dq = tiny.producer(result.model, tiny.node_named(result.model, name).input[0])
        source = tiny.producer(result.model, dq.input[0]).op_type
        assert source == ("DynamicQuantizeLinear" if name in details["dynamic"] else "QuantizeLinear")


def test_with_gptq_rounding_the_probe_measures_the_weights_quantize_qdq_writes(tiny):
    """The uneven Gemm's int8 error is measured with the codes quantize_qdq will write: with GPTQ's,
    lower than with nearest rounding (alone and in the all-int8 mix)."""
    from tests.passes.test_quantize_qdq import correlated_feeds, uneven_model

    model, calibration = uneven_model(tiny, 1), correlated_feeds()

    def planned(rounding):
        recipe = [
            ("calibrate", {}),
            ("plan_fallback", {"max_fallback": 0.0, "weight_rounding": rounding}),
            ("quantize_qdq", {"weight_rounding": rounding}),
        ]
        result = compress(model, recipe, calibration, use_cache=False)
        return next(p["details"] for p in result.report["passes"] if p["pass"] == "plan_fallback")

    near, rounded = planned("nearest"), planned("gptq")
    first = {name: {layer["node"]: layer["static_error"] for layer in d["layers"]}["first"] for name, d in
             (("nearest", near), ("gptq", rounded))}  # fmt: skip
    assert first["gptq"] < 0.8 * first["nearest"], first
    assert rounded["measured_error_all_int8"] < near["measured_error_all_int8"]
