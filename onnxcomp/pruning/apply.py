"""Cut a dependency group down to the channels it keeps: slice initializers, rewrite shapes.

Producers lose output channels (weight rows/filters and bias entries), consumers lose input rows
(in blocks of `repeat` after a flatten), per-channel constants on the path are sliced, a flatten
Reshape's shape constant gets the new size, and the recorded shapes of the values between are
updated so strict shape inference agrees. A consumer may be given new kept rows and a bias
change (recovery); a consumer without a bias gets one only through a new constant `Add` —
Gemm/Conv take it as their C/B input, a MatMul gets a following Add.
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.graph import NameAllocator, add_initializer, constant_array
from onnxcomp.ir.linears import Linear
from onnxcomp.pruning.group import Window
from onnxcomp.pruning.groups import PruneGroup


def consumer_rows(group: PruneGroup, keep: np.ndarray, window: Window | None = None) -> np.ndarray:
    """The consumer input rows the kept channels own (blocks of `repeat` per channel); through a
    Concat or Split `window`, the rows of the tensor's channels kept (the other inputs' all)."""
    keep = np.asarray(keep, dtype=np.int64)
    if window is not None:
        keep = window.indices(keep)
    return (keep[:, None] * group.repeat + np.arange(group.repeat)[None, :]).reshape(-1)


def _set(value: ir.Value, array: np.ndarray) -> None:
    value.const_value = ir.tensor(np.ascontiguousarray(array), name=value.name)
    value.shape = ir.Shape(array.shape)


def _take(value: ir.Value, index: np.ndarray, axis: int) -> None:
    _set(value, np.take(constant_array(value), index, axis=axis))


def apply_group(group: PruneGroup, keep: np.ndarray, new_consumers: dict | None = None) -> None:
    """Prune `group` to channels `keep` (sorted). `new_consumers` maps a consumer `Linear` to
    (kept rows as [k, N] float64 — a Conv's as [k·kh·kw, O] patch rows —, bias change [N] or None)
    from recovery."""
    keep = np.asarray(keep, dtype=np.int64)
    count = len(keep)
    # the kept channels of every tensor through a Concat or Split, read before any shape changes
    widths = {value: len(window.indices(keep)) for value, window in group.windows.items()}
    consumer_rows_of = {c: consumer_rows(group, keep, group.consumer_windows.get(c.node)) for c in group.consumers}
    constant_index = [keep if p.window is None else p.window.indices(keep) for p in group.constants]
    shape_counts = [count if r.window is None else len(r.window.indices(keep)) for r in group.shapes]
    for producer in group.producers:
        block = group.blocks.get(producer, group.block)
        columns = (keep[:, None] * block + np.arange(block)[None, :]).reshape(-1)
        _take(producer.weight, columns, producer.out_axis)
        for bias in _biases(producer):
            _take(bias, columns, 0)
    for consumer in group.consumers:
        new = (new_consumers or {}).get(consumer)
        if new is None:
            _take(consumer.weight, consumer_rows_of[consumer], consumer.in_axis)
            continue
        weight_kn, delta = new
        if consumer.node.op_type == "Conv":  # [C'·kh·kw, O] patches → [O, C', kh, kw]
            shape = consumer.array.shape
            weight = weight_kn.T.reshape(shape[0], -1, *shape[2:]).astype(consumer.array.dtype)
            _set(consumer.weight, weight)
        else:
            _set(consumer.weight, consumer.from_kn(weight_kn))
        if delta is not None and np.any(delta):
            _add_bias(consumer, delta)
    for piece, index in zip(group.constants, constant_index):
        _take(piece.value, index, piece.axis)
    for node in group.depthwise:
        node.attributes["group"] = ir.AttrInt64("group", count)
    for rewrite, kept in zip(group.shapes, shape_counts):
        shape = constant_array(rewrite.value).copy()
        shape[rewrite.index] = kept * rewrite.per_channel
        _set(rewrite.value, shape)
    for split in group.splits:
        sizes = [int(np.count_nonzero((keep >= lo) & (keep < hi))) for lo, hi in split.bounds]
        _set(split.node.inputs[1], np.array(sizes, dtype=np.int64))
    for value, (axis, per) in group.values.items():
        if value.shape is not None and len(value.shape) >= -axis:
            dims = list(value.shape)
            dims[axis] = int(widths.get(value, count) * per)
            value.shape = ir.Shape(dims)
    for producer in group.producers:  # a bias Add a refit put after a MatMul producer
        uses = list(producer.node.outputs[0].uses())
        if len(uses) == 1 and uses[0].node.name == f"{producer.name}.pruning_bias_add":
            uses[0].node.outputs[0].shape = producer.node.outputs[0].shape
    nodes: dict[ir.Node, dict[int, int]] = {}
    for entry in group.entries:
        nodes.setdefault(entry.node, {})[entry.index] = int(count * entry.per)
    for node, entries in nodes.items():
        _rewrite_shape(node, entries)


def _biases(producer: Linear) -> list[ir.Value]:
    """The producer's bias, including one a refit gave it after the groups were found (as a
    consumer of an earlier group): a Gemm/Conv's new C/B input, or a MatMul's new bias Add's."""
    if producer.bias is not None:
        return [producer.bias]
    node = producer.node
    if node.op_type in ("Gemm", "Conv") and len(node.inputs) > 2 and node.inputs[2] is not None:
        return [node.inputs[2]]
    uses = list(node.outputs[0].uses())
    if len(uses) == 1 and uses[0].node.name == f"{producer.name}.pruning_bias_add":
        return [uses[0].node.inputs[1]]
    return []


def _rewrite_shape(node: ir.Node, entries: dict[int, int]) -> None:
    """Give `node` its own shape input (a constant, or a Concat of one-element pieces) with
    `entries` changed; the old shape stays for its other readers and goes when it has none."""
    graph, old = node.graph, node.inputs[1]
    names = NameAllocator(graph)
    array = constant_array(old)
    if array is not None:
        array = array.copy()
        for index, size in entries.items():
            array[index] = size
        node.replace_input_with(1, add_initializer(graph, names.new(f"{node.name}.pruned_shape"), array))
    else:
        concat = old.producer()
        pieces = list(concat.inputs)
        for index, size in entries.items():
            name = names.new(f"{node.name}.pruned_shape_{index}")
            pieces[index] = add_initializer(graph, name, np.array([size], dtype=np.int64))
        new = ir.node("Concat", inputs=pieces, attributes={"axis": 0}, name=names.new(f"{node.name}.pruned_shape"))
        new.outputs[0].name = new.name
        new.outputs[0].shape, new.outputs[0].type = old.shape, old.type
        graph.insert_before(node, new)
        node.replace_input_with(1, new.outputs[0])
        if not old.uses() and not old.is_graph_output():
            graph.remove(concat, safe=True)
    if old.const_value is not None and not old.uses() and not old.is_graph_output() and old.name in graph.initializers:
        graph.initializers.pop(old.name)


def _add_bias(linear: Linear, delta: np.ndarray) -> None:
    """Add `delta` [N] to the layer's bias, creating one when it has none."""
    dtype = linear.array.dtype
    scale = linear.beta if linear.node.op_type == "Gemm" else 1.0
    if linear.bias is not None:
        _set(linear.bias, (constant_array(linear.bias) + delta / scale).astype(dtype))
        return
    output = linear.node.outputs[0]
    if linear.node.op_type == "MatMul" and output.is_graph_output():
        return  # no Add can follow a graph output without renaming it: recovery keeps W' only
    name = f"{linear.name}.pruning_bias"
    bias = ir.Value(name=name, const_value=ir.tensor((delta / scale).astype(dtype), name=name))
    bias.shape, bias.type = ir.Shape([len(delta)]), ir.TensorType(ir.DataType.from_numpy(np.dtype(dtype)))
    graph = linear.node.graph
    graph.register_initializer(bias)
    if linear.node.op_type in ("Gemm", "Conv"):
        linear.node.resize_inputs(3)
        linear.node.replace_input_with(2, bias)
        return
    add = ir.node("Add", inputs=[output, bias], name=f"{linear.name}.pruning_bias_add")
    new_output = add.outputs[0]
    new_output.name = f"{output.name}.biased"
    new_output.shape, new_output.type = output.shape, output.type
    for use in list(output.uses()):
        if use.node is not add:
            use.node.replace_input_with(use.idx, new_output)
    graph.insert_after(linear.node, add)
