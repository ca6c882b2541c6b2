"""Valid models the fuzzer found crashing, kept as regression tests."""

import numpy as np
from onnx import TensorProto, numpy_helper
from onnx import helper as h
from onnx.reference import ReferenceEvaluator

import onnxcomp


def test_conv_with_an_omitted_bias_before_batchnorm_is_folded():
    # fuzz seed 0 case 9633: Conv(x, K, "") → BatchNormalization crashed onnxscript's fusion rule
    rng = np.random.default_rng(0)
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "K", ""], ["c"], name="conv", pads=[1, 1, 1, 1]),
            h.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["y"], name="bn"),
        ],
        "conv_bn",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "K"),
            numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "g"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "be"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "mu"),
            numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var"),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    result = onnxcomp.compress(model, "canonicalize")
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = ReferenceEvaluator(result.model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
