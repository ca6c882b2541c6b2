"""The QDQ placement is the one ONNX Runtime fuses into integer kernels on the CPU:
DQ→MatMul (no output Q) → MatMulIntegerToFloat, and DQ→Conv→Q → QLinearConv."""

import collections

import numpy as np
import onnx
import pytest
from onnx import helper as h

import onnxcomp


def optimized_ops(tiny, path, tmp_path):
    optimized = tmp_path / "optimized.onnx"
    tiny.session(path, optimize=True, optimized_path=optimized)
    model = onnx.load(str(optimized))
    return collections.Counter((n.domain or "ai.onnx", n.op_type) for n in model.graph.node)


def compress_and_save(model, feeds, tmp_path, **options):
    path = tmp_path / "model.int8.onnx"
    recipe = "int8"
    onnxcomp.compress(
        model,
        recipe,
        calibration=feeds,
        output=path,
        use_cache=False,
        options={"quantize_qdq": options} if options else None,
    )
    return path


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_matmul_fuses_to_matmul_integer_to_float(tiny, tmp_path, dtype):
    rng = np.random.default_rng(0)
    model = tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), h.make_node("Relu", ["mm"], ["y"])],
        [("x", ["n", 32])],
        [("y", ["n", 16])],
        {"w": rng.standard_normal((32, 16)).astype(np.float32)},
        infer_shapes=True,
    )
    feeds = [{"x": rng.standard_normal((8, 32)).astype(np.float32)} for _ in range(3)]
    path = compress_and_save(model, feeds, tmp_path, activation_dtype=dtype)
    ops = optimized_ops(tiny, path, tmp_path)
    assert ops[("com.microsoft", "MatMulIntegerToFloat")] == 1, ops
    assert ops[("ai.onnx", "MatMul")] == 0 and ops[("ai.onnx", "DequantizeLinear")] == 0, ops
    # and the fused model computes what the unfused QDQ model computes
    unfused = tiny.run(path, feeds[0], optimize=False)[0]
    fused = tiny.run(path, feeds[0], optimize=True)[0]
    np.testing.assert_allclose(fused, unfused, rtol=1e-4, atol=1e-4)


def test_conv_fuses_to_qlinearconv(tiny, tmp_path):
    rng = np.random.default_rng(1)
    model = tiny.make_model(
        [
            h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            h.make_node("Relu", ["c"], ["y"]),
        ],
        [("x", ["n", 3, 8, 8])],
        [("y", ["n", 8, 8, 8])],
        {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "b": rng.standard_normal(8).astype(np.float32)},
        infer_shapes=True,
    )
    feeds = [{"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)} for _ in range(3)]
    path = compress_and_save(model, feeds, tmp_path)
    ops = optimized_ops(tiny, path, tmp_path)
    assert ops[("com.microsoft", "QLinearConv")] + ops[("ai.onnx", "QLinearConv")] == 1, ops
    assert ops[("ai.onnx", "Conv")] == 0 and ops[("com.microsoft", "FusedConv")] == 0, ops
    unfused = tiny.run(path, feeds[0], optimize=False)[0]
    fused = tiny.run(path, feeds[0], optimize=True)[0]
    # integer kernels may round the requantization differently: at most one output step apart
    (dq,) = [
        n for n in onnx.load(str(path)).graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "c_quantized"
    ]
    step = float(tiny.initializer(onnx.load(str(path)), dq.input[1]))
    assert np.abs(fused - unfused).max() <= step * 1.001
