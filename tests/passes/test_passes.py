"""The graph-rewrite passes on tiny graphs built here: fold_constants, simplify, fold_batchnorm,
remove_unused. Every rewrite is checked against the unmodified model run in ONNX Runtime (with
ORT's own graph optimizations off, so ORT cannot hide a wrong rewrite by redoing it).
quantize_qdq has its own file (test_quantize_qdq.py); the real-model tests are in test_real_models.py.
"""

import collections

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto
from onnx import helper as h

import onnxcomp
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes import PASSES
from onnxcomp.passes.remove_unused import RemoveUnused


def compress(model, *steps, **kwargs):
    return onnxcomp.compress(model, [(s, {}) for s in steps], use_cache=False, **kwargs)


def assert_same_outputs(tiny, before, after, feed, rtol=0.0, atol=0.0):
    ref = tiny.run(before, feed)
    got = tiny.run(after, feed)
    assert len(ref) == len(got)
    for r, g in zip(ref, got):
        assert r.shape == g.shape and r.dtype == g.dtype
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol)


# -- fold_constants ------------------------------------------------------------------------------
def test_fold_constants(tiny):
    rng = np.random.default_rng(0)
    k = rng.standard_normal(4).astype(np.float32)
    model = tiny.make_model(
        [
            h.make_node("Constant", [], ["c"], value=onnx.numpy_helper.from_array(np.array([1, 2, 3, 4], np.float32))),
            h.make_node("Add", ["c", "k"], ["ck"]),
            h.make_node("Mul", ["ck", "two"], ["ck2"]),
            h.make_node("Transpose", ["m"], ["mt"], perm=[1, 0]),
            h.make_node("MatMul", ["x", "mt"], ["xm"]),
            h.make_node("Add", ["xm", "ck2"], ["y"]),
        ],
        [("x", ["n", 3])],
        [("y", ["n", 4])],
        {"k": k, "two": np.array(2.0, np.float32), "m": rng.standard_normal((4, 3)).astype(np.float32)},
    )
    result = compress(model, "fold_constants")
    out = result.model
    # the folder may leave the now-dead Constant node for remove_unused
    live = [n for n in out.graph.node if n.op_type != "Constant" or tiny.consumers(out, n.output[0])]
    assert collections.Counter(n.op_type for n in live) == {"MatMul": 1, "Add": 1}
    # the folded value is the numpy value of the constant subgraph, now an initializer
    add = [n for n in out.graph.node if n.op_type == "Add"][0]
    folded = tiny.initializer(out, add.input[1])
    np.testing.assert_allclose(folded, (np.array([1, 2, 3, 4], np.float32) + k) * 2, rtol=1e-6)
    feed = {"x": rng.standard_normal((5, 3)).astype(np.float32)}
    assert_same_outputs(tiny, model, out, feed, rtol=1e-6, atol=1e-6)
    entry = result.report["passes"][0]
    assert entry["pass"] == "fold_constants" and entry["modified"] is True
    assert entry["nodes_removed"] == {"Mul": 1, "Add": 1, "Transpose": 1}


def test_fold_constants_leaves_a_constant_free_graph_alone(tiny):
    model = tiny.make_model([h.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", [2])])
    result = compress(model, "fold_constants")
    assert tiny.op_types(result.model) == ["Relu"]
    assert result.report["passes"][0]["modified"] is False


# -- simplify --------------------------------------------------------------------------------------
def test_simplify(tiny):
    model = tiny.make_model(
        [
            h.make_node("Transpose", ["x"], ["t1"], perm=[1, 0]),
            h.make_node("Transpose", ["t1"], ["t2"], perm=[1, 0]),
            h.make_node("Relu", ["t2"], ["r1"]),
            h.make_node("Relu", ["r1"], ["r2"]),
            h.make_node("Add", ["r2", "zero"], ["a"]),
            h.make_node("Mul", ["a", "one"], ["m"]),
            h.make_node("Reshape", ["m", "s1"], ["rs1"]),
            h.make_node("Reshape", ["rs1", "s2"], ["y"]),
        ],
        [("x", [2, 6])],
        [("y", [3, 4])],
        {
            "zero": np.array(0, np.float32),
            "one": np.array(1, np.float32),
            "s1": np.array([6, 2], np.int64),
            "s2": np.array([3, 4], np.int64),
        },
    )
    result = compress(model, "simplify")
    ops = collections.Counter(tiny.op_types(result.model))
    assert ops["Transpose"] == 0 and ops["Relu"] == 1 and ops["Reshape"] == 1
    assert ops["Add"] == 0 and ops["Mul"] == 0
    assert result.report["passes"][0]["details"]["nodes_removed"] >= 3
    feed = {"x": np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)}
    assert_same_outputs(tiny, model, result.model, feed)


def test_simplify_keeps_meaningful_ops(tiny):
    model = tiny.make_model(
        [h.make_node("Transpose", ["x"], ["t"], perm=[1, 0]), h.make_node("Add", ["t", "b"], ["y"])],
        [("x", [2, 3])],
        [("y", [3, 2])],
        {"b": np.array(0.5, np.float32)},
    )
    result = compress(model, "simplify")
    assert tiny.op_types(result.model) == ["Transpose", "Add"]
    assert result.report["passes"][0]["modified"] is False


def test_canonicalize_leaves_no_identity_nodes(tiny):
    model = tiny.make_model(
        [
            h.make_node("Transpose", ["x"], ["t1"], perm=[1, 0]),
            h.make_node("Transpose", ["t1"], ["t2"], perm=[1, 0]),
            h.make_node("Add", ["t2", "zero"], ["a"]),
            h.make_node("Relu", ["a"], ["y"]),
        ],
        [("x", [2, 6])],
        [("y", [2, 6])],
        {"zero": np.array(0, np.float32)},
    )
    result = onnxcomp.compress(model, "canonicalize")
    assert tiny.op_types(result.model) == ["Relu"]


# -- fold_batchnorm --------------------------------------------------------------------------------
def bn_params(rng, channels, prefix="bn"):
    return {
        f"{prefix}_scale": (rng.uniform(0.5, 2.0, channels) * rng.choice([-1, 1], channels)).astype(np.float32),
        f"{prefix}_bias": rng.standard_normal(channels).astype(np.float32),
        f"{prefix}_mean": rng.standard_normal(channels).astype(np.float32),
        f"{prefix}_var": rng.uniform(0.1, 3.0, channels).astype(np.float32),
    }


def bn_node(x, y, prefix="bn"):
    return h.make_node(
        "BatchNormalization",
        [x, f"{prefix}_scale", f"{prefix}_bias", f"{prefix}_mean", f"{prefix}_var"],
        [y],
        epsilon=1e-3,
        name=prefix,
    )


@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batchnorm_into_conv(tiny, with_bias):
    rng = np.random.default_rng(2)
    inits = {"w": rng.standard_normal((6, 3, 3, 3)).astype(np.float32), **bn_params(rng, 6)}
    conv_inputs = ["x", "w"]
    if with_bias:
        inits["b"] = rng.standard_normal(6).astype(np.float32)
        conv_inputs.append("b")
    model = tiny.make_model(
        [
            h.make_node("Conv", conv_inputs, ["c"], pads=[1, 1, 1, 1], name="conv"),
            bn_node("c", "bn_out"),
            h.make_node("Relu", ["bn_out"], ["y"]),
        ],
        [("x", ["n", 3, 8, 8])],
        [("y", ["n", 6, 8, 8])],
        inits,
    )
    result = compress(model, "fold_batchnorm")
    assert "BatchNormalization" not in tiny.op_types(result.model)
    assert tiny.op_types(result.model) == ["Conv", "Relu"]
    conv = result.model.graph.node[0]
    assert len(conv.input) == 3, "the folded Conv carries the BN shift as its bias"
    assert result.report["passes"][0]["details"] == {"folded": 1}
    feed = {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}
    assert_same_outputs(tiny, model, result.model, feed, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_into_conv_transpose_and_gemm(tiny):
    rng = np.random.default_rng(3)
    inits = {
        "wt": rng.standard_normal((3, 4, 2, 2)).astype(np.float32),  # ConvTranspose: (Cin, Cout, kh, kw)
        "bt": rng.standard_normal(4).astype(np.float32),
        "wg": rng.standard_normal((5, 4 * 8 * 8)).astype(np.float32) * 0.05,
        "bg": rng.standard_normal(5).astype(np.float32),
        **bn_params(rng, 4, "bn1"),
        **bn_params(rng, 5, "bn2"),
    }
    model = tiny.make_model(
        [
            h.make_node("ConvTranspose", ["x", "wt", "bt"], ["ct"], strides=[2, 2], name="deconv"),
            bn_node("ct", "bn1_out", "bn1"),
            h.make_node("Flatten", ["bn1_out"], ["flat"]),
            h.make_node("Gemm", ["flat", "wg", "bg"], ["g"], transB=1, name="gemm"),
            bn_node("g", "y", "bn2"),
        ],
        [("x", ["n", 3, 4, 4])],
        [("y", ["n", 5])],
        inits,
    )
    result = compress(model, "fold_batchnorm")
    assert "BatchNormalization" not in tiny.op_types(result.model)
    assert result.report["passes"][0]["details"] == {"folded": 2}
    feed = {"x": rng.standard_normal((3, 3, 4, 4)).astype(np.float32)}
    assert_same_outputs(tiny, model, result.model, feed, rtol=1e-5, atol=1e-5)


def test_fold_batchnorm_needs_constant_parameters(tiny):
    rng = np.random.default_rng(4)
    params = bn_params(rng, 2)
    scale = params.pop("bn_scale")
    model = tiny.make_model(
        [h.make_node("Conv", ["x", "w"], ["c"]), bn_node("c", "y")],
        [("x", ["n", 1, 3, 3]), ("bn_scale", [2])],
        [("y", ["n", 2, 3, 3])],
        {"w": rng.standard_normal((2, 1, 1, 1)).astype(np.float32), **params},
    )
    result = compress(model, "fold_batchnorm")
    assert "BatchNormalization" in tiny.op_types(result.model)
    assert result.report["passes"][0]["modified"] is False
    feed = {"x": rng.standard_normal((1, 1, 3, 3)).astype(np.float32), "bn_scale": scale}
    assert_same_outputs(tiny, model, result.model, feed)


# -- remove_unused -------------------------------------------------------------------------------------
def test_remove_unused_drops_dead_nodes_and_sorts(tiny):
    # nodes deliberately out of order (invalid for the checker until sorted), plus dead code
    graph = h.make_graph(
        [
            h.make_node("Relu", ["a"], ["y"], name="relu"),
            h.make_node("Exp", ["x"], ["dead"], name="dead_exp"),
            h.make_node("Neg", ["x"], ["a"], name="neg"),
            h.make_node("Add", ["dead", "unused_w"], ["dead2"], name="dead_add"),
        ],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [onnx.numpy_helper.from_array(np.ones(3, np.float32), "unused_w")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    with pytest.raises(OnnxcompError, match="topologically sorted"):  # compress() refuses invalid input
        compress(model, "remove_unused")
    ir_model = ir.from_proto(model)
    assert RemoveUnused()(ir_model).modified
    out = ir.to_proto(ir_model)
    assert [n.name for n in out.graph.node] == ["neg", "relu"]
    assert [i.name for i in out.graph.initializer] == []
    onnx.checker.check_model(out, full_check=True)
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    np.testing.assert_array_equal(tiny.run(out, {"x": x})[0], np.maximum(-x, 0))


def test_remove_unused_keeps_graph_outputs_and_their_producers(tiny):
    model = tiny.make_model(
        [h.make_node("Neg", ["x"], ["a"]), h.make_node("Relu", ["a"], ["y"])],
        [("x", [2])],
        [("y", [2]), ("a", [2])],
    )
    result = compress(model, "remove_unused")
    assert tiny.op_types(result.model) == ["Neg", "Relu"]
    assert result.report["passes"][0]["modified"] is False


# -- every pass ------------------------------------------------------------------------------------------
def test_every_pass_has_a_docstring_with_requires_and_guarantees():
    for name, cls in PASSES.items():
        doc = (__import__(cls.__module__, fromlist=["_"]).__doc__ or "") + (cls.__doc__ or "")
        assert "Requires" in doc and "Guarantees" in doc, name


def test_passes_run_directly_on_onnx_ir(tiny):
    """A pass is an onnx_ir in-place pass: usable without the pipeline."""
    rng = np.random.default_rng(5)
    model = tiny.make_model(
        [h.make_node("Conv", ["x", "w"], ["c"]), bn_node("c", "y")],
        [("x", ["n", 1, 3, 3])],
        [("y", ["n", 2, 3, 3])],
        {"w": rng.standard_normal((2, 1, 1, 1)).astype(np.float32), **bn_params(rng, 2)},
    )
    ir_model = ir.from_proto(model)
    result = PASSES["fold_batchnorm"]()(ir_model)
    assert result.modified and result.model is ir_model
    assert [n.op_type for n in ir_model.graph] == ["Conv"]


def test_fold_batchnorm_keeps_the_conv_name(tiny):
    rng = np.random.default_rng(6)
    model = tiny.make_model(
        [h.make_node("Conv", ["x", "w"], ["c"], name="encoder.conv1"), bn_node("c", "y")],
        [("x", ["n", 1, 3, 3])],
        [("y", ["n", 2, 3, 3])],
        {"w": rng.standard_normal((2, 1, 1, 1)).astype(np.float32), **bn_params(rng, 2)},
    )
    result = compress(model, "fold_batchnorm")
    assert [n.name for n in result.model.graph.node] == ["encoder.conv1"]
