"""quantize_qdq on tiny graphs: placement, parameters, exclusions, errors, and an error bound.

The bound. With `method="minmax"` the calibrated range of every quantized activation contains
every calibration value, so on a calibration feed each quantize→dequantize moves a value by at most
half a step (s/2); weights move by at most s_w[c]/2 per output channel c; the int32 bias by at most
s_b[c]/2. For a linear output y_c = Σ_k W_ck·x_k + b_c (K products):

    |ŷ_c − y_c| ≤ (s_x/2)·‖W_c‖₁ + (s_w[c]/2)·K·(max|x| + s_x/2) + s_b[c]/2   (+ s_y/2 if the
    output is quantized too: clipping to a range that contains y_c never moves it further away).

Relu is 1-Lipschitz, so the bound carries through it. The scales in the bound are checked first
against the numpy-computed statistics, so a wrong scale cannot loosen the bound unnoticed.
"""

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto
from onnx import helper as h

import onnxcomp
from onnxcomp.algorithms.quant_math import activation_qparams
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context

RNG_SEED = 0


def quantize(model, feeds, **options):
    recipe = [("calibrate", {}), ("quantize_qdq", {"method": "minmax", **options})]
    return onnxcomp.compress(model, recipe, calibration=feeds, use_cache=False)


def expose(model, *names):
    """A copy of the fp32 model with intermediate tensors as extra outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for name in names:
        copy.graph.output.append(h.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return copy


def make_model(tiny, *args, **kwargs):
    """Tiny models with value_info on intermediate tensors, as exporters write them (see
    test_intermediate_tensors_without_value_info_are_quantized for models without)."""
    return tiny.make_model(*args, infer_shapes=True, **kwargs)


def expected_act_qparams(values, dtype="uint8"):
    return activation_qparams(float(np.min(values)), float(np.max(values)), dtype)


def check_weight_dq(tiny, model, node, axis, weight):
    """The weight input of `node` is DequantizeLinear(int8 per-channel on `axis`) of `weight`."""
    dq = tiny.dq_params(model, node.input[1])
    assert dq["axis"] == axis
    assert dq["q"] is not None and dq["q"].shape == weight.shape
    codes = tiny.signed_codes(dq)  # ort-cpu: uint8 + 128
    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    np.testing.assert_allclose(dq["scale"], np.abs(weight).max(axis=reduce) / 127, rtol=1e-6)
    shape = [1] * weight.ndim
    shape[axis] = -1
    assert np.all(np.abs(codes * dq["scale"].reshape(shape) - weight) <= dq["scale"].reshape(shape) / 2 * 1.0001)
    return dq


def check_act_dq(tiny, model, tensor, source, values, dtype="uint8"):
    """`tensor` is DequantizeLinear(QuantizeLinear(source)) with min/max parameters of `values`."""
    dq = tiny.dq_params(model, tensor)
    q = tiny.producer(model, dq["input"])
    assert q.op_type == "QuantizeLinear" and q.input[0] == source
    scale, zp = expected_act_qparams(values, dtype)
    np.testing.assert_allclose(dq["scale"], scale, rtol=1e-6)
    assert dq["zero_point"].dtype == np.dtype(dtype) and int(dq["zero_point"]) == int(zp)
    assert dq["scale"].shape == () and tiny.initializer(model, q.input[1]) == dq["scale"]
    return float(dq["scale"])


# -- MatMul ------------------------------------------------------------------------------------------
@pytest.fixture
def matmul_model(tiny):
    rng = np.random.default_rng(RNG_SEED)
    w = (rng.standard_normal((16, 8)) * np.logspace(-2, 0, 8)).astype(np.float32)
    model = make_model(
        tiny,
        [h.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), h.make_node("Relu", ["mm"], ["y"], name="relu")],
        [("x", ["n", 16])],
        [("y", ["n", 8])],
        {"w": w},
    )
    feeds = [{"x": (rng.standard_normal((4, 16)) * 2 + 0.5).astype(np.float32)} for _ in range(5)]
    return model, w, feeds


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_matmul(tiny, matmul_model, dtype):
    model, w, feeds = matmul_model
    result = quantize(model, feeds, activation_dtype=dtype)
    out = result.model
    mm = tiny.node_named(out, "mm")
    xs = np.concatenate([f["x"] for f in feeds])
    s_x = check_act_dq(tiny, out, mm.input[0], "x", xs, dtype)
    s_w = check_weight_dq(tiny, out, mm, axis=1, weight=w)["scale"]
    # MatMul outputs are not quantized by default (so ORT fuses DQ→MatMul into MatMulIntegerToFloat)
    assert tiny.consumers(out, "mm")[0].op_type == "Relu"
    assert tiny.op_types(out).count("QuantizeLinear") == 1

    details = result.report["passes"][1]["details"]
    assert details["quantized_nodes"] == 1 and details["excluded"] == []
    assert details["layers"] == [{"node": "mm", "op": "MatMul", "weight": "w", "axis": 1, "channels": 8}]
    assert details["activations"]["x"]["scale"] == pytest.approx(s_x)

    # error bound (module docstring), on every calibration feed
    bound = (s_x / 2) * np.abs(w).sum(axis=0) + (s_w / 2) * 16 * (np.abs(xs).max() + s_x / 2)
    worst = 0.0
    for feed in feeds:
        ref, got = tiny.run(model, feed)[0], tiny.run(out, feed)[0]
        err = np.abs(got - ref)
        assert np.all(err <= bound * 1.0001 + 1e-6), (err.max(axis=0), bound)
        worst = max(worst, float(err.max()))
    assert worst > 0  # really quantized
    # the same holds with ORT's fused integer kernels
    feed = feeds[0]
    assert np.all(np.abs(tiny.run(out, feed, optimize=True)[0] - tiny.run(model, feed)[0]) <= bound * 1.0001 + 1e-6)


def test_matmul_batched_weight_uses_last_axis(tiny):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 6, 5)).astype(np.float32)
    model = make_model(
        tiny,
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", [2, "n", 6])],
        [("y", [2, "n", 5])],
        {"w": w},
    )
    feeds = [{"x": rng.standard_normal((2, 3, 6)).astype(np.float32)}]
    out = quantize(model, feeds).model
    check_weight_dq(tiny, out, tiny.node_named(out, "mm"), axis=2, weight=w)


# -- Conv ---------------------------------------------------------------------------------------------
def test_conv(tiny):
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((4, 3, 3, 3)) * np.array([1.0, 0.1, 0.5, 2.0])[:, None, None, None]).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    model = make_model(
        tiny,
        [
            h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            h.make_node("Relu", ["c"], ["y"], name="relu"),
        ],
        [("x", ["n", 3, 8, 8])],
        [("y", ["n", 4, 8, 8])],
        {"w": w, "b": b},
    )
    feeds = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    result = quantize(model, feeds)
    out = result.model
    conv = tiny.node_named(out, "conv")
    xs = np.concatenate([f["x"] for f in feeds])
    s_x = check_act_dq(tiny, out, conv.input[0], "x", xs)
    s_w = check_weight_dq(tiny, out, conv, axis=0, weight=w)["scale"]
    # bias: int32, scale = input scale × weight scale, no zero point (or zero)
    bias = tiny.dq_params(out, conv.input[2])
    assert bias["q"].dtype == np.int32 and bias["axis"] == 0
    np.testing.assert_array_equal(bias["scale"], (np.float32(s_x) * s_w).astype(np.float32))
    assert bias["zero_point"] is None or not bias["zero_point"].any()
    assert np.all(np.abs(bias["q"] * bias["scale"] - b) <= bias["scale"] / 2 * 1.0001)
    # the Conv output is quantized (so ORT can form QLinearConv); Relu reads the dequantized tensor
    (relu,) = [n for n in out.graph.node if n.op_type == "Relu"]
    conv_out = np.concatenate([tiny.run(expose(model, "c"), f)[1] for f in feeds])
    s_y = check_act_dq(tiny, out, relu.input[0], "c", conv_out)

    bound = (
        (s_x / 2) * np.abs(w).sum(axis=(1, 2, 3))
        + (s_w / 2) * 27 * (np.abs(xs).max() + s_x / 2)
        + bias["scale"] / 2
        + s_y / 2
    )
    for feed in feeds:
        err = np.abs(tiny.run(out, feed)[0] - tiny.run(model, feed)[0]).max(axis=(0, 2, 3))
        assert np.all(err <= bound * 1.0001 + 1e-6), (err, bound)
        assert err.max() > 0


def test_conv_output_quantization_can_be_turned_off(tiny):
    rng = np.random.default_rng(3)
    model = make_model(
        tiny,
        [h.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        [("x", ["n", 2, 4, 4])],
        [("y", ["n", 3, 4, 4])],
        {"w": rng.standard_normal((3, 2, 1, 1)).astype(np.float32)},
    )
    feeds = [{"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}]
    out = quantize(model, feeds, quantize_outputs=[]).model
    assert tiny.op_types(out).count("QuantizeLinear") == 1


# -- Gemm ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trans_b", [1, 0])
def test_gemm(tiny, trans_b):
    rng = np.random.default_rng(4)
    w_kn = (rng.standard_normal((16, 6)) * np.logspace(-1, 0.5, 6)).astype(np.float32)  # (K, N)
    w = np.ascontiguousarray(w_kn.T) if trans_b else w_kn
    c = rng.standard_normal(6).astype(np.float32)
    model = make_model(
        tiny,
        [h.make_node("Gemm", ["x", "w", "c"], ["y"], transB=trans_b, name="gemm")],
        [("x", ["n", 16])],
        [("y", ["n", 6])],
        {"w": w, "c": c},
    )
    feeds = [{"x": rng.uniform(0, 3, (8, 16)).astype(np.float32)} for _ in range(3)]  # non-negative: zp 0
    result = quantize(model, feeds)
    out = result.model
    gemm = tiny.node_named(out, "gemm")
    assert tiny.attr(gemm, "transB", 0) == trans_b
    xs = np.concatenate([f["x"] for f in feeds])
    s_x = check_act_dq(tiny, out, gemm.input[0], "x", xs)
    assert int(tiny.dq_params(out, gemm.input[0])["zero_point"]) == 0
    axis = 0 if trans_b else 1
    s_w = check_weight_dq(tiny, out, gemm, axis=axis, weight=w)["scale"]
    assert s_w.shape == (6,)
    bias = tiny.dq_params(out, gemm.input[2])
    assert bias["q"].dtype == np.int32
    np.testing.assert_array_equal(bias["scale"], (np.float32(s_x) * s_w).astype(np.float32))
    bound = (s_x / 2) * np.abs(w_kn).sum(axis=0) + (s_w / 2) * 16 * (np.abs(xs).max() + s_x / 2) + bias["scale"] / 2
    for feed in feeds:
        err = np.abs(tiny.run(out, feed)[0] - tiny.run(model, feed)[0])
        assert np.all(err <= bound * 1.0001 + 1e-6)


# -- placement ------------------------------------------------------------------------------------------
def two_layer_model(tiny, rng):
    """x → MatMul 'mm_a' → Relu → Gemm 'head_gemm'; x also feeds MatMul 'mm_b' and a residual Add."""
    return make_model(
        tiny,
        [
            h.make_node("MatMul", ["x", "wa"], ["a"], name="mm_a"),
            h.make_node("MatMul", ["x", "wb"], ["b"], name="mm_b"),
            h.make_node("Add", ["a", "x"], ["res"], name="residual"),
            h.make_node("Relu", ["res"], ["r"], name="relu"),
            h.make_node("Gemm", ["r", "wg"], ["g"], transB=1, name="head_gemm"),
            h.make_node("Add", ["g", "b"], ["y"], name="out_add"),
        ],
        [("x", ["n", 8])],
        [("y", ["n", 8])],
        {
            "wa": rng.standard_normal((8, 8)).astype(np.float32),
            "wb": rng.standard_normal((8, 8)).astype(np.float32),
            "wg": rng.standard_normal((8, 8)).astype(np.float32),
        },
    )


def test_activation_shared_by_quantized_consumers_but_not_by_others(tiny):
    rng = np.random.default_rng(5)
    model = two_layer_model(tiny, rng)
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)}]
    out = quantize(model, feeds).model
    q_of_x = [n for n in out.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x"]
    assert len(q_of_x) == 1, "one Q/DQ pair for x, shared by both MatMuls"
    assert tiny.node_named(out, "mm_a").input[0] == tiny.node_named(out, "mm_b").input[0] != "x"
    assert tiny.node_named(out, "residual").input[1] == "x", "the residual Add keeps the float tensor"
    assert tiny.producer(out, tiny.node_named(out, "head_gemm").input[1]).op_type == "DequantizeLinear"


@pytest.mark.parametrize("exclude", [["head_*"], ["Gemm"], ["head_gemm", "relu"]])
def test_exclusions(tiny, exclude):
    rng = np.random.default_rng(6)
    model = two_layer_model(tiny, rng)
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)}]
    result = quantize(model, feeds, exclude=exclude)
    out = result.model
    gemm = tiny.node_named(out, "head_gemm")
    assert list(gemm.input) == ["r", "wg"], "the excluded Gemm is untouched"
    assert tiny.producer(out, tiny.node_named(out, "mm_a").input[1]).op_type == "DequantizeLinear"
    assert result.report["passes"][1]["details"]["excluded"] == ["head_gemm"]


def test_exclusion_by_op_type_matmul(tiny):
    rng = np.random.default_rng(7)
    model = two_layer_model(tiny, rng)
    out = quantize(model, [{"x": rng.standard_normal((4, 8)).astype(np.float32)}], exclude=["MatMul"]).model
    assert list(tiny.node_named(out, "mm_a").input) == ["x", "wa"]
    assert list(tiny.node_named(out, "mm_b").input) == ["x", "wb"]
    assert tiny.producer(out, tiny.node_named(out, "head_gemm").input[1]).op_type == "DequantizeLinear"


def test_op_types_option(tiny):
    rng = np.random.default_rng(8)
    model = two_layer_model(tiny, rng)
    out = quantize(model, [{"x": rng.standard_normal((4, 8)).astype(np.float32)}], op_types=["Gemm"]).model
    assert list(tiny.node_named(out, "mm_a").input) == ["x", "wa"]
    assert tiny.producer(out, tiny.node_named(out, "head_gemm").input[1]).op_type == "DequantizeLinear"


def test_exclusion_pattern_matching_nothing_raises(tiny):
    rng = np.random.default_rng(9)
    model = two_layer_model(tiny, rng)
    with pytest.raises(OnnxcompError, match=r"--exclude 'haed_\*': no node has this name or op type"):
        quantize(model, [{"x": rng.standard_normal((4, 8)).astype(np.float32)}], exclude=["head_*", "haed_*"])


def test_a_pass_without_a_calibrate_step_gets_its_statistics_collected(tiny, matmul_model):
    """The pass manager collects the requests of a pass no calibrate step serves just before it runs:
    the same statistics, so the same bytes as with the explicit step."""
    model, _, feeds = matmul_model
    alone = onnxcomp.compress(model, [("quantize_qdq", {})], calibration=feeds, use_cache=False)
    stepped = onnxcomp.compress(model, [("calibrate", {}), ("quantize_qdq", {})], calibration=feeds, use_cache=False)
    assert alone.model.SerializeToString(deterministic=True) == stepped.model.SerializeToString(deterministic=True)
    assert "DequantizeLinear" in {n.op_type for n in alone.model.graph.node}


def test_missing_statistics_raise_a_clear_error(tiny, matmul_model):
    """Run directly (not through the pass manager), the pass has nobody to collect for it: one line."""
    model, _, feeds = matmul_model
    qdq = PASSES["quantize_qdq"](Context(calibration=feeds))
    with pytest.raises(
        OnnxcompError,
        match=r"quantize_qdq.*calibration statistics missing for tensor 'x' \(no calibrate step or pass manager",
    ):
        qdq(ir.from_proto(model))


def test_calibrate_without_data_raises(tiny, matmul_model):
    model, _, _ = matmul_model
    with pytest.raises(OnnxcompError, match=r"pass 'calibrate' needs calibration data"):
        onnxcomp.compress(model, "int8")


def test_activation_matmul_option(tiny):
    rng = np.random.default_rng(10)
    model = make_model(
        tiny,
        [h.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]), h.make_node("MatMul", ["x", "xt"], ["y"], name="gram")],
        [("x", [4, 6])],
        [("y", [4, 4])],
    )
    feeds = [{"x": rng.standard_normal((4, 6)).astype(np.float32)}]
    assert "QuantizeLinear" not in tiny.op_types(quantize(model, feeds).model)
    out = quantize(model, feeds, activation_matmul=True).model
    gram = tiny.node_named(out, "gram")
    assert all(tiny.producer(out, i).op_type == "DequantizeLinear" for i in gram.input)
    # xt reaches x through a Transpose: it shares x's scale and zero point
    assert tiny.dq_params(out, gram.input[1])["scale"] == tiny.dq_params(out, gram.input[0])["scale"]


def test_scale_shared_through_data_movement(tiny):
    rng = np.random.default_rng(11)
    model = make_model(
        tiny,
        [
            h.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
            h.make_node("Relu", ["c1"], ["r1"]),
            h.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            h.make_node("Conv", ["p1", "w2"], ["y"], name="conv2"),
        ],
        [("x", ["n", 2, 6, 6])],
        [("y", ["n", 3, 3, 3])],
        {
            "w1": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
            "w2": rng.standard_normal((3, 4, 1, 1)).astype(np.float32),
        },
    )
    feeds = [{"x": rng.standard_normal((2, 2, 6, 6)).astype(np.float32)}]
    result = quantize(model, feeds)
    acts = result.report["passes"][1]["details"]["activations"]
    assert acts["p1"]["shared_with"] == "c1"
    assert (acts["p1"]["scale"], acts["p1"]["zero_point"]) == (acts["c1"]["scale"], acts["c1"]["zero_point"])
    out = result.model
    conv2 = tiny.node_named(out, "conv2")
    assert tiny.dq_params(out, conv2.input[0])["scale"] == np.float32(acts["c1"]["scale"])


def test_model_without_quantizable_nodes_is_unchanged(tiny):
    model = make_model(tiny, [h.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", [2])])
    result = onnxcomp.compress(model, "int8", calibration=[{"x": np.ones(2, np.float32)}], use_cache=False)
    assert tiny.op_types(result.model) == ["Relu"]


# -- bugs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mse", "entropy"])
def test_int8_activation_range_uses_the_symmetric_step(tiny, method):
    from onnxcomp.calibration.collectors import TensorStats

    rng = np.random.default_rng(12)
    model = make_model(
        tiny,
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", ["n", 16])],
        [("y", ["n", 8])],
        {"w": rng.standard_normal((16, 8)).astype(np.float32)},
    )
    feeds = [{"x": rng.exponential(1.0, (256, 16)).astype(np.float32)} for _ in range(4)]  # after-ReLU-like
    stats = TensorStats()
    for feed in feeds:
        stats.update(feed["x"])
    expected_scale, _ = activation_qparams(*stats.range(method, scheme="symmetric"), "int8")
    result = quantize(model, feeds, activation_dtype="int8", method=method)
    got = result.report["passes"][1]["details"]["activations"]["x"]["scale"]
    assert got == pytest.approx(float(expected_scale), rel=1e-6)


def test_bias_that_overflows_int32_is_not_clipped(tiny):
    rng = np.random.default_rng(13)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[1] *= 1e-7  # a nearly dead channel ...
    b = np.array([0.1, 1.0, -0.2, 0.3], np.float32)  # ... with a real bias
    model = make_model(
        tiny,
        [h.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="conv")],
        [("x", ["n", 3, 8, 8])],
        [("y", ["n", 4, 8, 8])],
        {"w": w, "b": b},
    )
    feeds = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    out = quantize(model, feeds, quantize_outputs=[]).model
    xs = np.concatenate([f["x"] for f in feeds])
    s_x = float(expected_act_qparams(xs)[0])
    err = np.abs(tiny.run(out, feeds[0])[0] - tiny.run(model, feeds[0])[0]).max(axis=(0, 2, 3))
    # channel 1: weights contribute < 1e-5, so the error is the bias error plus input rounding
    assert err[1] <= 0.01 + (s_x / 2) * np.abs(w[1]).sum(), err


def test_fp16_model(tiny):
    rng = np.random.default_rng(14)
    model = make_model(
        tiny,
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [h.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 16])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 8])],
        {"w": rng.standard_normal((16, 8)).astype(np.float16)},
    )
    feeds = [{"x": rng.standard_normal((4, 16)).astype(np.float16)}]
    out = quantize(model, feeds).model
    err = np.abs(tiny.run(out, feeds[0])[0].astype(np.float32) - tiny.run(model, feeds[0])[0].astype(np.float32))
    assert err.max() < 0.5


def test_intermediate_tensors_without_value_info_are_quantized(tiny):
    rng = np.random.default_rng(15)
    model = tiny.make_model(  # no value_info for 'r'
        [h.make_node("Relu", ["x"], ["r"]), h.make_node("MatMul", ["r", "w"], ["y"], name="mm")],
        [("x", ["n", 8])],
        [("y", ["n", 4])],
        {"w": rng.standard_normal((8, 4)).astype(np.float32)},
    )
    assert not model.graph.value_info
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)}]
    result = onnxcomp.compress(model, "int8", calibration=feeds, use_cache=False)
    assert [e for e in result.report["passes"] if e["pass"] == "quantize_qdq"][0]["details"]["quantized_nodes"] == 1
    mm = tiny.node_named(result.model, "mm")
    assert [tiny.producer(result.model, i).op_type for i in mm.input] == ["DequantizeLinear", "DequantizeLinear"]


def test_tied_weight_on_two_axes(tiny):
    rng = np.random.default_rng(16)
    model = make_model(
        tiny,
        [
            h.make_node("Gemm", ["x", "w"], ["a"], transB=0, name="encoder"),
            h.make_node("Relu", ["a"], ["r"]),
            h.make_node("Gemm", ["r", "w"], ["y"], transB=1, name="decoder"),
        ],
        [("x", ["n", 8])],
        [("y", ["n", 8])],
        {"w": rng.standard_normal((8, 8)).astype(np.float32)},
    )
    feeds = [{"x": rng.standard_normal((4, 8)).astype(np.float32)}]
    out = quantize(model, feeds).model
    assert tiny.dq_params(out, tiny.node_named(out, "encoder").input[1])["axis"] == 1
    assert tiny.dq_params(out, tiny.node_named(out, "decoder").input[1])["axis"] == 0


# -- dynamic activation ranges ---------------------------------------------------------------
def two_matmuls(tiny):
    rng = np.random.default_rng(RNG_SEED)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["t"], name="first"),
        h.make_node("Relu", ["t"], ["r"]),
        h.make_node("MatMul", ["r", "w2"], ["y"], name="second"),
    ]
    weights = {
        "w1": rng.standard_normal((16, 32)).astype(np.float32),
        "w2": rng.standard_normal((32, 8)).astype(np.float32),
    }
    return make_model(tiny, nodes, [("x", ["n", 16])], [("y", ["n", 8])], weights)


def dynamic_feeds(scale: float, count: int = 4):
    rng = np.random.default_rng(RNG_SEED + 1)
    return [{"x": (scale * rng.standard_normal((8, 16))).astype(np.float32)} for _ in range(count)]


def test_dynamic_activations_follow_each_tensor_and_fuse_in_onnx_runtime(tiny, tmp_path):
    model = two_matmuls(tiny)
    calibration = dynamic_feeds(1.0)
    static = quantize(model, calibration).model
    dynamic = quantize(model, calibration, activations="dynamic").model
    for name in ("first", "second"):
        dq = tiny.producer(dynamic, tiny.node_named(dynamic, name).input[0])
        assert dq.op_type == "DequantizeLinear"
        assert tiny.producer(dynamic, dq.input[0]).op_type == "DynamicQuantizeLinear"
    optimized = tmp_path / "optimized.onnx"
    tiny.session(dynamic, optimize=True, optimized_path=str(optimized))
    assert "DynamicQuantizeMatMul" in tiny.op_types(onnx.load(optimized))  # (MiniLM: every MatMul fuses)

    # served data 20x wider than the calibration data: static ranges clip it, dynamic ones follow it
    served = dynamic_feeds(20.0, 1)[0]
    reference = tiny.run(model, served)[0]

    def relative_error(quantized):
        return np.linalg.norm(tiny.run(quantized, served)[0] - reference) / np.linalg.norm(reference)

    assert relative_error(dynamic) < 0.02 < 0.5 < relative_error(static)


def test_a_plan_makes_single_layers_dynamic(tiny):
    from onnxcomp.precision.plan import PrecisionPlan, Scheme

    model = two_matmuls(tiny)
    plan = PrecisionPlan(Scheme("blockwise", 8, 128, True), layers={"second": Scheme("dynamic")})
    recipe = [("calibrate", {}), ("quantize_qdq", {"method": "minmax"})]
    result = onnxcomp.compress(model, recipe, calibration=dynamic_feeds(1.0), use_cache=False, precision_plan=plan)
    quantized = result.model
    first_in = tiny.producer(quantized, tiny.node_named(quantized, "first").input[0])
    second_in = tiny.producer(quantized, tiny.node_named(quantized, "second").input[0])
    assert tiny.producer(quantized, first_in.input[0]).op_type == "QuantizeLinear"
    assert tiny.producer(quantized, second_in.input[0]).op_type == "DynamicQuantizeLinear"


def test_dynamic_activations_are_refused_for_symmetric_only_targets(tiny):
    with pytest.raises(OnnxcompError, match="dynamic activations are uint8"):
        onnxcomp.compress(
            two_matmuls(tiny), [("calibrate", {}), ("quantize_qdq", {"activations": "dynamic"})],
            calibration=dynamic_feeds(1.0), target="tensorrt", use_cache=False,
        )  # fmt: skip


def uneven_model(tiny, trans_b):
    """x[32, 64] → Gemm (16 outputs; transB as given) → Relu → MatMul (8 outputs), on correlated
    inputs; a few weight rows 20× the rest (what SmoothQuant's scales leave), so a per-channel step is
    coarse for the others."""
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((64, 16)).astype(np.float32)
    w1[:4] *= 20.0
    w2 = rng.standard_normal((16, 8)).astype(np.float32)
    nodes = [
        h.make_node("Gemm", ["x", "w1", "b1"], ["g"], name="first", transB=trans_b),
        h.make_node("Relu", ["g"], ["r"]),
        h.make_node("MatMul", ["r", "w2"], ["y"], name="second"),
    ]
    inits = {"w1": w1.T.copy() if trans_b else w1, "b1": np.zeros(16, np.float32), "w2": w2}
    outputs = [("y", [32, 8]), ("g", [32, 16])]
    return tiny.make_model(nodes, [("x", [32, 64])], outputs, inits, infer_shapes=True)


def correlated_feeds(n=4):
    rng = np.random.default_rng(6)
    mix = rng.standard_normal((64, 64)).astype(np.float32)
    return [{"x": (rng.standard_normal((32, 64)).astype(np.float32) @ mix) / 8} for _ in range(n)]


@pytest.mark.parametrize("trans_b", [1, 0])
def test_gptq_weight_rounding_lowers_the_output_error_with_the_same_scales(tiny, trans_b):
    model, feeds = uneven_model(tiny, trans_b), correlated_feeds()
    nearest = quantize(model, feeds)
    gptq = quantize(model, feeds, weight_rounding="gptq")

    def error(result):  # of the uneven layer's output, on the calibration data
        return np.mean([np.linalg.norm(tiny.run(result.model, f)[1] - tiny.run(model, f)[1]) for f in feeds])

    assert error(gptq) < 0.8 * error(nearest), (error(gptq), error(nearest))
    for name in ("first", "second"):
        want = tiny.dq_params(nearest.model, tiny.node_named(nearest.model, name).input[1])
        got = tiny.dq_params(gptq.model, tiny.node_named(gptq.model, name).input[1])
        assert got["q"].dtype == want["q"].dtype and got["q"].shape == want["q"].shape and got["axis"] == want["axis"]
        np.testing.assert_allclose(got["scale"], want["scale"], rtol=0.01)  # RTN's scales (absmax/127 or /128)
        assert (tiny.signed_codes(got) != tiny.signed_codes(want)).any()  # only the codes differ
    layers = next(p for p in gptq.report["passes"] if p["pass"] == "quantize_qdq")["details"]["layers"]
    assert [layer.get("weight_rounding") for layer in layers] == ["gptq", "gptq"]


def test_bad_weight_rounding_is_one_line(tiny):
    model, feeds = uneven_model(tiny, 1), correlated_feeds(1)
    with pytest.raises(OnnxcompError, match="weight_rounding must be 'nearest' or 'gptq', not 'best'"):
        quantize(model, feeds, weight_rounding="best")


def test_gptq_weight_rounding_reads_a_quantized_conv_output(tiny):
    """A MatMul reading a Conv output, which quantize_qdq rewires to its DequantizeLinear first: the
    MatMul's Gram is still the one of the float tensor it was requested for."""
    rng = np.random.default_rng(7)
    nodes = [
        h.make_node("Conv", ["x", "wc"], ["c"], name="conv"),
        h.make_node("MatMul", ["c", "w2"], ["y"], name="mm"),
    ]
    inits = {
        "wc": rng.standard_normal((3, 2, 1, 1)).astype(np.float32),
        "w2": rng.standard_normal((4, 5)).astype(np.float32),
    }
    model = tiny.make_model(nodes, [("x", [1, 2, 4, 4])], [("y", [1, 3, 4, 5])], inits, infer_shapes=True)
    feeds = [{"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)} for _ in range(2)]
    result = quantize(model, feeds, weight_rounding="gptq")
    layers = next(p for p in result.report["passes"] if p["pass"] == "quantize_qdq")["details"]["layers"]
    assert {layer["node"]: layer.get("weight_rounding") for layer in layers} == {"conv": None, "mm": "gptq"}
    assert tiny.producer(result.model, tiny.node_named(result.model, "mm").input[0]).op_type == "DequantizeLinear"


def test_ort_cpu_stores_int8_codes_as_uint8_unless_asked_for_int8(tiny):
    """ort-cpu writes the int8 codes + 128 with zero point 128 (exact in ONNX Runtime's uint8 × uint8
    kernel on CPUs without VNNI); `weight_dtype: int8` keeps the signed form; same codes and scales."""
    model, feeds = uneven_model(tiny, 1), correlated_feeds(1)
    default, signed = quantize(model, feeds), quantize(model, feeds, weight_dtype="int8")
    for name in ("first", "second"):
        unsigned_dq = tiny.dq_params(default.model, tiny.node_named(default.model, name).input[1])
        signed_dq = tiny.dq_params(signed.model, tiny.node_named(signed.model, name).input[1])
        assert unsigned_dq["q"].dtype == np.uint8 and signed_dq["q"].dtype == np.int8
        np.testing.assert_array_equal(tiny.signed_codes(unsigned_dq), tiny.signed_codes(signed_dq))
        np.testing.assert_array_equal(unsigned_dq["scale"], signed_dq["scale"])


@pytest.mark.parametrize(
    "weight_dtype, target, message",
    [
        ("int4", "ort-cpu", "weight_dtype must be 'int8' or 'uint8', not 'int4'"),
        ("uint8", "tensorrt", "weight_dtype 'uint8' is not read by target 'tensorrt'"),
    ],
)
def test_bad_weight_dtype_is_one_line(tiny, weight_dtype, target, message):
    model, feeds = uneven_model(tiny, 1), correlated_feeds(1)
    recipe = [("calibrate", {}), ("quantize_qdq", {"weight_dtype": weight_dtype})]
    with pytest.raises(OnnxcompError, match=message):
        onnxcomp.compress(model, recipe, calibration=feeds, use_cache=False, target=target)
