"""onnxcomp.algorithms.quant_math: pure numpy quantization arithmetic."""

import numpy as np
import pytest

from onnxcomp.algorithms.quant_math import activation_qparams, dequantize, quantize_bias, quantize_weight_per_channel


def quantize_linear(x, scale, zero_point, qmin, qmax):
    """ONNX QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point)."""
    return np.clip(np.rint(np.asarray(x, np.float32) / np.float32(scale)) + int(zero_point), qmin, qmax)


# -- activation_qparams -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "lo, hi",
    [(-1.0, 1.0), (-0.3, 5.7), (-7.0, 0.25), (0.0, 3.0), (0.5, 3.0), (-2.0, -0.5), (-1e-3, 1e3)],
)
def test_uint8_asymmetric_range_contains_zero_and_covers_data(lo, hi):
    scale, zp = activation_qparams(lo, hi, "uint8")
    assert scale.dtype == np.float32 and zp.dtype == np.uint8
    assert scale > 0
    # 0.0 is exactly representable: it quantizes to the zero point and back to 0.0.
    assert quantize_linear(0.0, scale, zp, 0, 255) == int(zp)
    assert dequantize(np.array([zp], np.uint8), scale, zp)[0] == 0.0
    # Every value of the widened range [min(lo,0), max(hi,0)] round-trips within half a step.
    x = np.linspace(min(lo, 0.0), max(hi, 0.0), 10001, dtype=np.float32)
    q = quantize_linear(x, scale, zp, 0, 255).astype(np.uint8)
    err = np.abs(dequantize(q, scale, zp) - x)
    assert err.max() <= scale / 2 * (1 + 1e-5) + 1e-7
    # The scale spreads the widened range over the 255 steps (no wasted codes).
    np.testing.assert_allclose(scale, (max(hi, 0.0) - min(lo, 0.0)) / 255, rtol=1e-6)


def test_uint8_zero_point_for_one_sided_ranges():
    assert int(activation_qparams(0.0, 6.0, "uint8")[1]) == 0
    assert int(activation_qparams(-6.0, 0.0, "uint8")[1]) == 255
    assert int(activation_qparams(-1.0, 1.0, "uint8")[1]) in (127, 128)


@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (-0.3, 5.7), (-7.0, 0.25), (0.0, 3.0)])
def test_int8_is_symmetric(lo, hi):
    scale, zp = activation_qparams(lo, hi, "int8")
    assert zp.dtype == np.int8 and int(zp) == 0
    np.testing.assert_allclose(scale, max(abs(lo), abs(hi)) / 127, rtol=1e-6)
    x = np.linspace(lo, hi, 1001, dtype=np.float32)
    q = quantize_linear(x, scale, 0, -128, 127).astype(np.int8)
    assert np.abs(dequantize(q, scale, 0) - x).max() <= scale / 2 * (1 + 1e-5)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("lo, hi", [(0.0, 0.0), (-0.0, 0.0)])
def test_degenerate_zero_range(dtype, lo, hi):
    scale, zp = activation_qparams(lo, hi, dtype)
    assert np.isfinite(scale) and scale > 0
    assert int(zp) == 0


def test_degenerate_single_point_range_is_widened_to_zero():
    scale, zp = activation_qparams(5.0, 5.0, "uint8")
    np.testing.assert_allclose(scale, 5.0 / 255, rtol=1e-6)
    assert int(zp) == 0
    scale, zp = activation_qparams(-3.0, -3.0, "uint8")
    np.testing.assert_allclose(scale, 3.0 / 255, rtol=1e-6)
    assert int(zp) == 255


def test_unknown_activation_dtype():
    with pytest.raises(ValueError, match="int4"):
        activation_qparams(-1, 1, "int4")


# -- quantize_weight_per_channel ---------------------------------------------------------------
@pytest.mark.parametrize("shape, axis", [((8, 5), 0), ((8, 5), 1), ((4, 3, 3, 3), 0), ((6, 7), -1), ((2, 16, 8), 2)])
def test_weight_per_channel_error_within_half_step(shape, axis):
    rng = np.random.default_rng(1)
    w = rng.standard_normal(shape).astype(np.float32)
    # channels of very different magnitude: a per-tensor scale would fail the bound below
    bshape = [1] * len(shape)
    bshape[axis] = -1
    w = w * np.logspace(-3, 1, shape[axis]).astype(np.float32).reshape(bshape)
    q, scales = quantize_weight_per_channel(w, axis)
    assert q.dtype == np.int8 and q.shape == w.shape
    assert scales.dtype == np.float32 and scales.shape == (shape[axis],)
    assert q.min() >= -127 and q.max() <= 127
    reduce = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    np.testing.assert_allclose(scales, np.abs(w).max(axis=reduce) / 127, rtol=1e-6)
    deq = dequantize(q, scales, 0, axis=axis)
    err = np.abs(deq - w)
    assert np.all(err <= scales.reshape(bshape) / 2 * (1 + 1e-5))
    # the extreme of each channel maps to ±127 exactly
    assert np.all(np.abs(q).max(axis=reduce) == 127)


def test_weight_zero_channel_gets_scale_one():
    w = np.array([[0.0, 1.0], [0.0, -2.0], [0.0, 0.5]], np.float32)  # axis 1: channel 0 all zeros
    q, scales = quantize_weight_per_channel(w, axis=1)
    assert scales[0] == 1.0
    assert np.all(q[:, 0] == 0)
    np.testing.assert_allclose(scales[1], 2.0 / 127, rtol=1e-6)
    assert np.isfinite(dequantize(q, scales, 0, axis=1)).all()


def test_weight_axis_matters():
    w = np.array([[1.0, 100.0], [2.0, 50.0]], np.float32)
    _, s0 = quantize_weight_per_channel(w, axis=0)
    _, s1 = quantize_weight_per_channel(w, axis=1)
    np.testing.assert_allclose(s0, [100 / 127, 50 / 127], rtol=1e-6)
    np.testing.assert_allclose(s1, [2 / 127, 100 / 127], rtol=1e-6)


# -- quantize_bias ---------------------------------------------------------------------------------
def test_bias_int32_with_product_scale():
    rng = np.random.default_rng(2)
    bias = rng.standard_normal(6).astype(np.float32)
    weight_scales = np.linspace(0.01, 0.06, 6).astype(np.float32)
    input_scale = 0.02
    q, scales = quantize_bias(bias, input_scale, weight_scales)
    assert q.dtype == np.int32 and scales.dtype == np.float32 and scales.shape == bias.shape
    np.testing.assert_allclose(scales, np.float32(input_scale) * weight_scales, rtol=1e-6)
    err = np.abs(dequantize(q, scales, 0, axis=0) - bias)
    assert np.all(err <= scales / 2 * (1 + 1e-5))


def test_bias_per_tensor_weight_scale_broadcasts():
    q, scales = quantize_bias(np.array([0.5, -0.25], np.float32), 0.5, np.float32(0.01))
    np.testing.assert_array_equal(scales, np.float32(0.005) * np.ones(2, np.float32))
    np.testing.assert_array_equal(q, [100, -50])


def test_bias_that_overflows_int32_is_refused_not_clipped():
    assert quantize_bias(np.array([1e6, -1e6], np.float32), 1e-4, np.array([1e-4, 1e-4], np.float32)) is None


# -- dequantize -------------------------------------------------------------------------------------
def test_dequantize_per_channel_axis_and_zero_points():
    q = np.array([[10, 20], [30, 40]], np.uint8)
    out = dequantize(q, np.array([0.5, 2.0], np.float32), np.array([10, 0], np.uint8), axis=0)
    np.testing.assert_allclose(out, [[0.0, 5.0], [60.0, 80.0]])
    out = dequantize(q, np.array([0.5, 2.0], np.float32), 0, axis=1)
    np.testing.assert_allclose(out, [[5.0, 40.0], [15.0, 80.0]])


def test_dequantize_matches_onnx_reference():
    """Same numbers as ONNX's own DequantizeLinear (reference evaluator)."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    q, scales = quantize_weight_per_channel(w, axis=1)
    node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)
    graph = helper.make_graph(
        [node],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6])],
        [
            numpy_helper.from_array(q, "q"),
            numpy_helper.from_array(scales, "s"),
            numpy_helper.from_array(np.zeros(6, np.int8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    (expected,) = ReferenceEvaluator(model).run(None, {})
    np.testing.assert_array_equal(dequantize(q, scales, 0, axis=1), expected)


def test_tiny_ranges_never_give_zero_scale():
    assert activation_qparams(0.0, 1e-44, "uint8")[0] > 0
    assert activation_qparams(-1e-44, 1e-44, "int8")[0] > 0
    _, scales = quantize_weight_per_channel(np.array([[1e-44, -1e-45], [1.0, 2.0]], np.float32), axis=0)
    assert np.all(scales > 0)
