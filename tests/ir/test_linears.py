"""onnxcomp.ir.linears: one view of MatMul, Gemm and Conv layers (axes, [K, N] weight, bias, output)."""

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper as h

from onnxcomp.ir.linears import linear_of, matrix_linear, scale_along

RNG = np.random.default_rng(0)
W = RNG.standard_normal((6, 4)).astype(np.float32)  # [K, N]


def only_node(tiny, nodes, inputs, outputs, inits):
    model = ir.from_proto(tiny.make_model(nodes, inputs, outputs, inits, infer_shapes=True))
    return model, {n.name: n for n in model.graph}


def test_matmul_with_a_bias_add(tiny):
    bias = RNG.standard_normal(4).astype(np.float32)
    nodes = [h.make_node("MatMul", ["x", "w"], ["mm"], name="mm"), h.make_node("Add", ["mm", "b"], ["y"], name="add")]
    _, named = only_node(tiny, nodes, [("x", [2, 6])], [("y", [2, 4])], {"w": W, "b": bias})
    lin = linear_of(named["mm"])
    assert (lin.in_axis, lin.out_axis, lin.k, lin.n) == (0, 1, 6, 4)
    assert lin.bias.name == "b" and lin.output.name == "y" and lin.plain and not lin.transposed
    np.testing.assert_array_equal(lin.weight_kn(), W)
    assert lin.skip_reason() == ""


def test_gemm_trans_b_alpha_and_trans_a(tiny):
    nodes = [
        h.make_node("Gemm", ["x", "wt", "c"], ["y"], name="g", transB=1),
        h.make_node("Gemm", ["x", "w"], ["z"], name="scaled", alpha=0.5),
        h.make_node("Gemm", ["xt", "w"], ["u"], name="ta", transA=1),
    ]
    _, named = only_node(
        tiny,
        nodes,
        [("x", [2, 6]), ("xt", [6, 2])],
        [("y", [2, 4]), ("z", [2, 4]), ("u", [2, 4])],
        {"wt": W.T.copy(), "c": np.ones(4, np.float32), "w": W},
    )
    g = linear_of(named["g"])
    assert (g.in_axis, g.out_axis, g.k, g.n) == (1, 0, 6, 4) and g.transposed and g.bias.name == "c"
    np.testing.assert_array_equal(g.weight_kn(), W)
    assert g.from_kn(W).shape == (4, 6)
    scaled = linear_of(named["scaled"])
    assert not scaled.plain and scaled.alpha == 0.5 and scaled.skip_reason() == "Gemm with transA or alpha/beta ≠ 1"
    assert matrix_linear(named["scaled"]) is not None  # folding scales through alpha is exact
    assert linear_of(named["ta"]).trans_a and matrix_linear(named["ta"]) is None


def test_conv_axes_and_non_constant_weight(tiny):
    conv_w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "cw", "cb"], ["y"], name="conv"),
        h.make_node("MatMul", ["x2", "x3"], ["z"], name="act"),
    ]
    _, named = only_node(
        tiny,
        nodes,
        [("x", [1, 3, 8, 8]), ("x2", [2, 5]), ("x3", [5, 2])],
        [("y", [1, 8, 6, 6]), ("z", [2, 2])],
        {"cw": conv_w, "cb": np.zeros(8, np.float32)},
    )
    conv = linear_of(named["conv"])
    assert (conv.in_axis, conv.out_axis, conv.n) == (1, 0, 8) and conv.bias.name == "cb"
    assert not conv.is_matrix and matrix_linear(named["conv"]) is None
    assert "not a 2-D float matrix" in conv.skip_reason()
    assert linear_of(named["act"]) is None  # both operands computed: not a layer with a weight


def test_weight_is_reread_after_a_rewrite(tiny):
    _, named = only_node(
        tiny, [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", [2, 6])], [("y", [2, 4])], {"w": W}
    )
    lin = linear_of(named["mm"])
    first = lin.array
    assert lin.array is first  # read once
    scale_along(lin.weight, np.full(6, 2.0), lin.in_axis)
    np.testing.assert_array_equal(lin.array, 2 * W)  # the replaced tensor is seen


def test_release_drops_the_copy_read_from_the_stored_weight(tiny):
    _, named = only_node(
        tiny, [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", [2, 6])], [("y", [2, 4])], {"w": W}
    )
    lin = linear_of(named["mm"])
    first = lin.array
    lin.release()  # the next use reads the weight again (a proto tensor's numpy() is a fresh copy)
    assert lin.array is not first
    np.testing.assert_array_equal(lin.array, W)


@pytest.mark.parametrize("op", ["Relu", "Add"])
def test_other_ops_are_not_linears(tiny, op):
    inputs = ["x"] if op == "Relu" else ["x", "x"]
    _, named = only_node(tiny, [h.make_node(op, inputs, ["y"], name="n")], [("x", [2, 6])], [("y", [2, 6])], {})
    assert linear_of(named["n"]) is None
