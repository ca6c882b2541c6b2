"""onnxcomp.precision: the presets' rule as a default plan, and a per-layer plan the appliers read."""

import numpy as np
import onnx_ir as ir
from onnx import helper as h

from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.precision import PrecisionPlan, Scheme, weight_only_plan


def lm_like(tiny):
    rng = np.random.default_rng(1)
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["a"], name="body"),
        h.make_node("MatMul", ["a", "w2"], ["logits"], name="head"),
    ]
    inits = {
        "w1": rng.standard_normal((64, 64)).astype(np.float32),
        "w2": rng.standard_normal((64, 32)).astype(np.float32),
    }
    return ir.from_proto(tiny.make_model(nodes, [("x", [2, 64])], [("logits", [2, 32])], inits, infer_shapes=True))


def test_default_plan_is_the_presets_rule(tiny):
    model = lm_like(tiny)
    plan = weight_only_plan(list(model.graph), bits=4, group=32, symmetric=False, output_layer_bits=8)
    body, head = list(model.graph)
    assert plan.scheme_for(body) == Scheme("blockwise", 4, 32, False)
    assert plan.scheme_for(head) == Scheme("blockwise", 8, 32, True)  # output layers: 8-bit, symmetric
    assert weight_only_plan(list(model.graph), 4, 32, False, 0).scheme_for(head).bits == 4


def test_a_plan_in_the_context_sets_each_layer(tiny):
    """The RTN pass run directly with a plan: the body at int8 g64, the head at the plan's default int4."""
    model = lm_like(tiny)
    plan = PrecisionPlan(Scheme("blockwise", 4, 128, True), {"body": Scheme("blockwise", 8, 64, False)})
    rtn = PASSES["quantize_weight_only"](Context(precision_plan=plan))
    rtn(model)
    layers = {layer["node"]: layer for layer in rtn.details["layers"]}
    assert (layers["body"]["bits"], layers["body"]["group_size"], layers["body"]["symmetric"]) == (8, 64, False)
    assert (layers["head"]["bits"], layers["head"]["group_size"]) == (4, 128)
    assert [n.op_type for n in model.graph] == ["MatMulNBits", "MatMulNBits"]


def test_the_default_plan_holds_for_unnamed_nodes(tiny):
    """The presets' rule keys nodes, not names: two unnamed MatMuls keep 4 bits and 8 bits (LM head)."""
    rng = np.random.default_rng(2)
    nodes = [h.make_node("MatMul", ["x", "w1"], ["a"]), h.make_node("MatMul", ["a", "w2"], ["logits"])]
    inits = {
        "w1": rng.standard_normal((64, 64)).astype(np.float32),
        "w2": rng.standard_normal((64, 32)).astype(np.float32),
    }
    model = ir.from_proto(tiny.make_model(nodes, [("x", [2, 64])], [("logits", [2, 32])], inits, infer_shapes=True))
    rtn = PASSES["quantize_weight_only"](Context())
    rtn(model)
    assert [layer["bits"] for layer in rtn.details["layers"]] == [4, 8]


def test_keep_leaves_a_layer_in_float_and_unknown_kinds_are_refused(tiny):
    import pytest

    from onnxcomp.errors import OnnxcompError

    model = lm_like(tiny)
    plan = PrecisionPlan(Scheme("blockwise", 4, 128, True), {"head": Scheme("keep")})
    rtn = PASSES["quantize_weight_only"](Context(precision_plan=plan))
    rtn(model)
    assert [n.op_type for n in model.graph] == ["MatMulNBits", "MatMul"]
    assert rtn.details["skipped"] == [{"node": "head", "reason": "kept in float by the precision plan"}]
    with pytest.raises(OnnxcompError, match="unknown scheme kind 'fp8'"):
        Scheme("fp8")


def test_compress_refuses_a_plan_of_the_wrong_type(tiny, tmp_path):
    import pytest

    import onnxcomp
    from onnxcomp.errors import OnnxcompError

    proto = tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", [2, 64])],
        [("y", [2, 8])],
        {"w": np.ones((64, 8), np.float32)},
    )
    out = tmp_path / "out.onnx"
    with pytest.raises(OnnxcompError, match=r"^precision_plan must be an onnxcomp.precision.PrecisionPlan, not dict$"):
        onnxcomp.compress(proto, "w4a16-rtn", output=out, precision_plan={"mm": 8})
    assert not out.exists()
