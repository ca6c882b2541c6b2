"""Concat and Split of a group's channels: offsets into the consumer's rows, split sizes rewritten.

Cutting computes what the unpruned model computes with the consumers' rows of the removed
channels zeroed; the result passes the checker with strict shape inference. A Concat input of
unknown channel count and a Split without constant sizes are reported with the reason.
"""

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper as h

from onnxcomp.ir.modelio import check_model
from onnxcomp.passes import PASSES
from onnxcomp.passes.base import Context
from onnxcomp.pruning.apply import apply_group, consumer_rows
from onnxcomp.pruning.groups import find_groups
from onnxcomp.pruning.params import ParamCounter

A, X, B = 6, 3, 5  # channels of conv a, of the graph input passed through, of conv b


def concat_cnn(tiny, seed=0):
    """conv a (6) and conv b (5) → Concat(a, x, b) on the channels (x: the input's 3 channels)
    → × per-channel scale → Relu → conv d, and Relu(a) also read by conv e directly."""
    rng = np.random.default_rng(seed)
    init = {
        "wa": rng.standard_normal((A, X, 3, 3)).astype(np.float32),
        "ba": rng.standard_normal(A).astype(np.float32),
        "wb": rng.standard_normal((B, X, 3, 3)).astype(np.float32),
        "scale": rng.uniform(0.5, 1.5, (1, A + X + B, 1, 1)).astype(np.float32),
        "wd": rng.standard_normal((4, A + X + B, 3, 3)).astype(np.float32),
        "we": rng.standard_normal((2, A, 1, 1)).astype(np.float32),
    }
    nodes = [
        h.make_node("Conv", ["x", "wa", "ba"], ["ca"], name="a", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["ca"], ["ra"]),
        h.make_node("Conv", ["x", "wb"], ["cb"], name="b", pads=[1, 1, 1, 1]),
        h.make_node("Concat", ["ra", "x", "cb"], ["cat"], name="concat", axis=1),
        h.make_node("Mul", ["cat", "scale"], ["scaled"], name="scale"),
        h.make_node("Relu", ["scaled"], ["rs"]),
        h.make_node("Conv", ["rs", "wd"], ["yd"], name="d", pads=[1, 1, 1, 1]),
        h.make_node("Conv", ["ra", "we"], ["ye"], name="e"),
    ]
    inputs, outputs = [("x", ["n", X, 6, 6])], [("yd", ["n", 4, 6, 6]), ("ye", ["n", 2, 6, 6])]
    return tiny.make_model(nodes, inputs, outputs, init, infer_shapes=True)


def split_cnn(tiny, seed=0):
    """conv p (8) → Split [3, 5] on the channels → Relu → conv q (first part) and
    × per-channel scale → conv r (second part)."""
    rng = np.random.default_rng(seed)
    init = {
        "wp": rng.standard_normal((8, 2, 3, 3)).astype(np.float32),
        "bp": rng.standard_normal(8).astype(np.float32),
        "sizes": np.array([3, 5], np.int64),
        "scale": rng.uniform(0.5, 1.5, (5, 1, 1)).astype(np.float32),
        "wq": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
        "wr": rng.standard_normal((4, 5, 3, 3)).astype(np.float32),
    }
    nodes = [
        h.make_node("Conv", ["x", "wp", "bp"], ["cp"], name="p", pads=[1, 1, 1, 1]),
        h.make_node("Split", ["cp", "sizes"], ["s0", "s1"], name="split", axis=1),
        h.make_node("Relu", ["s0"], ["r0"]),
        h.make_node("Conv", ["r0", "wq"], ["yq"], name="q"),
        h.make_node("Mul", ["s1", "scale"], ["m1"], name="scale"),
        h.make_node("Conv", ["m1", "wr"], ["yr"], name="r", pads=[1, 1, 1, 1]),
    ]
    inputs, outputs = [("x", ["n", 2, 6, 6])], [("yq", ["n", 4, 6, 6]), ("yr", ["n", 4, 6, 6])]
    return tiny.make_model(nodes, inputs, outputs, init, infer_shapes=True)


def _zeroed(proto, groups, keeps):
    """A copy of `proto` with every consumer's rows of the channels not kept zeroed."""
    zeroed = onnx.ModelProto.FromString(proto.SerializeToString())
    names = [i.name for i in zeroed.graph.initializer]
    for group, keep in zip(groups, keeps):
        drop = np.setdiff1d(np.arange(group.channels), keep)
        for consumer in group.consumers:
            window = group.consumer_windows.get(consumer.node)
            rows = consumer_rows(group, drop, window)
            if window is not None and window.concat is not None:  # the dropped channels' rows only
                rows = np.setdiff1d(
                    consumer_rows(group, np.arange(group.channels), window), consumer_rows(group, keep, window)
                )
            index = names.index(consumer.weight.name)
            array = onnx.numpy_helper.to_array(zeroed.graph.initializer[index]).copy()
            array[(slice(None),) * consumer.in_axis + (rows,)] = 0
            zeroed.graph.initializer[index].CopyFrom(onnx.numpy_helper.from_array(array, consumer.weight.name))
    return zeroed


def _cut_equals_zeroed(tiny, proto, keeps, feed):
    groups = [g for g in find_groups(ir.from_proto(proto)) if not g.reason]
    zeroed = _zeroed(proto, groups, keeps)
    model = ir.from_proto(onnx.ModelProto.FromString(zeroed.SerializeToString()))
    groups = [g for g in find_groups(model) if not g.reason]
    for group, keep in zip(groups, keeps):
        apply_group(group, np.asarray(keep))
    check_model(model, "pruned")  # checker + strict shape inference
    pruned = ir.to_proto(model)
    reference = tiny.run(zeroed, feed)
    assert any(np.abs(r - o).max() > 1e-2 for r, o in zip(reference, tiny.run(proto, feed)))  # zeroing mattered
    for got, want in zip(tiny.run(pruned, feed), reference):
        assert np.allclose(got, want, atol=1e-5)
    return pruned


def test_concat_offsets_each_producer_into_the_consumer_rows_after_the_earlier_inputs(tiny):
    proto = concat_cnn(tiny)
    groups = [g for g in find_groups(ir.from_proto(proto)) if not g.reason]
    assert [(g.name, sorted(c.name for c in g.consumers)) for g in groups] == [("a", ["d", "e"]), ("b", ["d"])]
    a, b = groups
    assert set(a.consumer_windows) == {c.node for c in a.consumers if c.name == "d"}
    assert [p.window.index for p in a.constants + b.constants] == [0, 2]  # the scale, sliced at each offset
    counter = ParamCounter(groups)
    keeps = [[0, 2, 5], [1, 2, 4]]
    # a is cut first: b's offset (a's kept count + 3) is read from the shapes when b is cut
    feed = {"x": np.random.default_rng(1).standard_normal((2, X, 6, 6)).astype(np.float32)}
    pruned = _cut_equals_zeroed(tiny, proto, keeps, feed)
    assert tiny.initializer(pruned, "wd").shape == (4, 3 + X + 3, 3, 3)
    assert tiny.initializer(pruned, "scale").shape == (1, 3 + X + 3, 1, 1)
    # d's 9 rows per removed channel are counted once per group, the same tensor cut by both
    removed = counter.removed_for([3, 2])
    assert removed == (3 * X * 9 + 3) + (3 * 4 * 9) + (3 * 2) + 3 + (3 * X * 9) + (3 * 4 * 9) + 3


def test_a_split_cuts_each_part_and_rewrites_the_sizes(tiny):
    proto = split_cnn(tiny)
    (group,) = [g for g in find_groups(ir.from_proto(proto)) if not g.reason]
    assert group.name == "p" and sorted(c.name for c in group.consumers) == ["q", "r"]
    assert [s.bounds for s in group.splits] == [[(0, 3), (3, 8)]]
    feed = {"x": np.random.default_rng(2).standard_normal((2, 2, 6, 6)).astype(np.float32)}
    pruned = _cut_equals_zeroed(tiny, proto, [[1, 3, 4, 7]], feed)
    assert tiny.initializer(pruned, "sizes").tolist() == [1, 3]
    assert tiny.initializer(pruned, "wq").shape == (4, 1, 1, 1) and tiny.initializer(pruned, "wr").shape == (4, 3, 3, 3)
    assert tiny.initializer(pruned, "scale").shape == (3, 1, 1)


def test_the_pass_keeps_a_channel_in_every_split_part(tiny):
    model = ir.from_proto(split_cnn(tiny))
    step = PASSES["prune_structured"](
        Context(), sparsity=0.8, prune="channels", multiple=1, importance="magnitude", recovery="none"
    )
    step(model)
    sizes = model.graph.initializers["sizes"].const_value.numpy()
    assert sizes.min() >= 1 and sizes.sum() < 8
    check_model(model, "pruned split")


def test_unknown_concat_widths_and_split_sizes_computed_at_run_time_are_reported(tiny):
    proto = concat_cnn(tiny)
    proto.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "c"  # x's channels unknown
    reasons = {g.name: g.reason for g in find_groups(ir.from_proto(proto))}
    assert reasons["a"] == "Concat concat: the channel count of input 1 is unknown"
    assert reasons["b"] == "Concat concat: the channel count of input 1 is unknown"
    proto = split_cnn(tiny)
    sizes = h.make_node("Identity", ["sizes_in"], ["sizes_run"])
    proto.graph.node.insert(0, sizes)
    proto.graph.input.append(h.make_tensor_value_info("sizes_in", onnx.TensorProto.INT64, [2]))
    proto.graph.node[2].input[1] = "sizes_run"
    reasons = {g.name: g.reason for g in find_groups(ir.from_proto(proto))}
    assert reasons["p"] == "Split split has no constant split sizes (computed at run time, or num_outputs)"


def test_a_concat_of_two_parts_of_one_group_is_reported(tiny):
    rng = np.random.default_rng(0)
    init = {"wp": rng.standard_normal((4, 2, 1, 1)).astype(np.float32)}
    init["wd"] = rng.standard_normal((3, 8, 1, 1)).astype(np.float32)
    nodes = [
        h.make_node("Conv", ["x", "wp"], ["cp"], name="p"),
        h.make_node("Relu", ["cp"], ["rp"]),
        h.make_node("Concat", ["cp", "rp"], ["cat"], name="concat", axis=1),
        h.make_node("Conv", ["cat", "wd"], ["y"], name="d"),
    ]
    proto = tiny.make_model(nodes, [("x", ["n", 2, 4, 4])], [("y", ["n", 3, 4, 4])], init, infer_shapes=True)
    reasons = {g.name: g.reason for g in find_groups(ir.from_proto(proto))}
    assert reasons["p"] == "Concat concat reads the group's channels twice"
