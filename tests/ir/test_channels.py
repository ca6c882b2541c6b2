"""onnxcomp.ir.channels: per-op channel rules, and the channel map they give along a path."""

import numpy as np
import onnx_ir as ir
from onnx import helper as h

from onnxcomp.ir.channels import RULES, channel_map, rule_for


def test_grouped_query_heads_map_to_their_kv_channel(tiny):
    """V [B, S, 2 heads × 3] → heads [B, 2, S, 3] → Expand to 4 query heads → back to [B, S, 12]:
    query-head channel j copies V channel (head(j) // 2) * 3 + j % 3."""
    shape = lambda *d: np.array(d, np.int64)  # noqa: E731
    nodes = [
        h.make_node("Reshape", ["v", "s1"], ["v4"], name="split"),
        h.make_node("Transpose", ["v4"], ["vt"], name="heads", perm=[0, 2, 1, 3]),
        h.make_node("Unsqueeze", ["vt", "ax"], ["vu"], name="unsq"),
        h.make_node("Expand", ["vu", "rep"], ["ve"], name="repeat"),
        h.make_node("Reshape", ["ve", "s2"], ["vq"], name="merge_groups"),
        h.make_node("Transpose", ["vq"], ["vs"], name="back", perm=[0, 2, 1, 3]),
        h.make_node("Reshape", ["vs", "s3"], ["y"], name="merge"),
    ]
    inits = {
        "s1": shape(1, 5, 2, 3),
        "ax": shape(2),
        "rep": shape(1, 2, 2, 5, 3),
        "s2": shape(1, 4, 5, 3),
        "s3": shape(1, 5, 12),
    }
    model = ir.from_proto(tiny.make_model(nodes, [("v", [1, 5, 6])], [("y", [1, 5, 12])], inits, infer_shapes=True))
    path = list(model.graph)
    mapping = channel_map(model.graph.inputs[0], 6, path)
    expected = [(j // 3 // 2) * 3 + j % 3 for j in range(12)]
    assert mapping.tolist() == expected


def test_an_op_without_a_rule_stops_the_map(tiny):
    nodes = [h.make_node("Softmax", ["v"], ["y"], name="softmax", axis=-1)]
    model = ir.from_proto(tiny.make_model(nodes, [("v", [1, 5, 6])], [("y", [1, 5, 6])], {}, infer_shapes=True))
    assert rule_for(next(iter(model.graph))) is None
    assert channel_map(model.graph.inputs[0], 6, list(model.graph)) is None


def test_value_matmul_carries_channels_but_a_weight_matmul_does_not(tiny):
    w = np.ones((6, 6), np.float32)
    nodes = [
        h.make_node("MatMul", ["p", "v"], ["attn"], name="pv"),
        h.make_node("MatMul", ["attn", "w"], ["y"], name="o"),
    ]
    model = ir.from_proto(
        tiny.make_model(nodes, [("p", [1, 5, 5]), ("v", [1, 5, 6])], [("y", [1, 5, 6])], {"w": w}, infer_shapes=True)
    )
    pv, o = list(model.graph)
    assert [v.name for v in RULES["MatMul"].carriers(pv, pv.outputs[0])] == ["v"]
    assert RULES["MatMul"].carriers(o, o.outputs[0]) == []
