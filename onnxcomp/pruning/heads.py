"""Attention-head groups: Q/K/V output columns and O input rows of whole heads, found on the graph.

Walking up from an output projection O (a linear whose input is the heads merged back):
Reshape ← Transpose ← MatMul(P, V) with P ← Softmax ← (scale, mask) ← MatMul(Q, Kᵀ), and each
of Q, K, V ← Transpose ← Reshape [.., H, d] ← a linear producer. Head h owns the producers'
output columns h·d … h·d+d−1 and O's input rows of the same numbers, so a head is removed by
slicing those, and every tensor on the way has one axis of size H that shrinks with it.

Recognised only when nothing outside reads the path, Q, K and V have the same H·d columns (a
grouped-query model, K/V narrower than Q, is reported and left alone), the split shape gives H
and d statically, and no shape constant on the way holds H or H·d (exports that split with
[B, S, −1, d] and merge with [B, S, −1] need no rewrite; a constant head count would, and is
reported instead).
"""

import onnx_ir as ir

from onnxcomp.ir.graph import constant_array
from onnxcomp.ir.linears import Linear
from onnxcomp.pruning.group import PruneGroup

PATH_OPS = {"Reshape", "Transpose", "Softmax", "Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity"}


class _NoHeads(Exception):
    pass


def _shape_constants(value: ir.Value) -> list[int]:
    """Constant entries of a Reshape's shape: the array, or the constant inputs of a Concat."""
    array = constant_array(value)
    if array is not None:
        return [int(x) for x in array.ravel()]
    node = value.producer()
    if node is None or node.op_type != "Concat":
        return []
    return [int(x) for v in node.inputs if (a := constant_array(v)) is not None for x in a.ravel()]


def _walk_up(value: ir.Value, outputs: dict, nodes: list, producers: list, reshapes: list, depth=0) -> None:
    linear = outputs.get(value)
    if linear is not None:
        producers.append(linear)
        return
    node = value.producer()
    if node is None or node.domain != "" or depth > 12:
        raise _NoHeads("the path reaches a graph input")
    if node.op_type == "MatMul":
        if any(constant_array(v) is not None for v in node.inputs):
            raise _NoHeads(f"MatMul {node.name} has a constant operand on the attention path")
    elif node.op_type not in PATH_OPS:
        raise _NoHeads(f"{node.op_type} {node.name} on the attention path")
    if node in nodes:
        return
    nodes.append(node)
    if node.op_type == "Reshape":
        reshapes.append(node)
        _walk_up(node.inputs[0], outputs, nodes, producers, reshapes, depth + 1)
        return
    for operand in node.inputs:
        if operand is None or constant_array(operand) is not None:
            continue
        if node.op_type in ("Add", "Sub", "Where", "Mul", "Div") and _is_side_input(operand, node):
            continue  # the mask (or a scale tensor) broadcast over heads: not on the heads' path
        _walk_up(operand, outputs, nodes, producers, reshapes, depth + 1)


def _is_side_input(operand: ir.Value, node: ir.Node) -> bool:
    """A computed operand of an elementwise node that broadcasts (has a 1 where the output has heads)."""
    out = node.outputs[0].shape
    if out is None or operand.shape is None:
        return False
    return len(operand.shape) == len(out) and any(a == 1 and b != 1 for a, b in zip(operand.shape, out))


def head_group(consumer: Linear, outputs: dict[ir.Value, Linear]) -> PruneGroup | None:
    """The head group whose merged heads `consumer` reads, None when its input is not a head merge,
    or a group with `reason` when it is one that cannot be pruned."""
    merge = consumer.node.inputs[0].producer()
    if merge is None or merge.op_type != "Reshape" or consumer.node.op_type != "MatMul":
        return None
    nodes: list[ir.Node] = []
    producers: list[Linear] = []
    reshapes: list[ir.Node] = []
    try:
        _walk_up(consumer.node.inputs[0], outputs, nodes, producers, reshapes)
    except _NoHeads:
        return None
    if len(producers) != 3 or not any(n.op_type == "Softmax" for n in nodes):
        return None
    group = PruneGroup("heads", 0, producers=producers, consumers=[consumer])
    splits = [r for r in reshapes if r is not merge]
    shape = splits[0].outputs[0].shape if splits else None
    if shape is None or len(shape) != 4 or not isinstance(shape[-2], int) or not isinstance(shape[-1], int):
        group.reason = "the heads' split shape is not static"
        return group
    heads, dim = int(shape[-2]), int(shape[-1])
    group.channels, group.repeat, group.block = heads, dim, dim
    widths = {p.n for p in producers}
    if widths != {heads * dim} or consumer.k != heads * dim:
        group.reason = f"grouped-query attention (Q/K/V widths {sorted(widths)}): heads are not grouped yet"
        return group
    if heads == dim:
        group.reason = "head count equals head size: the head axis is ambiguous"
        return group
    for reshape in reshapes:
        if {heads, heads * dim} & set(_shape_constants(reshape.inputs[1])):
            group.reason = f"Reshape {reshape.name} has the head count in a shape constant (not rewritten yet)"
            return group
    inside = set(nodes) | {consumer.node} | {p.node for p in producers} | {p.output.producer() for p in producers}
    for node in nodes:
        for out in node.outputs:
            if out.is_graph_output() or any(u.node not in inside for u in out.uses()):
                group.reason = f"{node.op_type} {node.name}'s output is read outside the attention block"
                return group
    for p in producers:
        if any(u.node not in inside for u in p.output.uses()):
            group.reason = f"{p.name}'s output is read outside the attention block"
            return group
    values = [p.output for p in producers] + [p.node.outputs[0] for p in producers]
    values += [o for n in nodes for o in n.outputs]
    for value in values:
        dims = list(value.shape) if value.shape is not None else []
        if len(dims) == 3 and dims[-1] == heads * dim:
            group.values[value] = (-1, dim)
        elif len(dims) == 4:
            axes = [i for i, d in enumerate(dims) if d == heads]
            if len(axes) != 1:
                group.reason = f"value {value.name!r} has no single head axis"
                return group
            group.values[value] = (axes[0] - 4, 1)
    return group


def heads_of(model: ir.Model, linears: list[Linear]) -> list[PruneGroup]:
    """Every attention-head group of the model (including skipped ones with their reasons)."""
    outputs = {lin.output: lin for lin in linears}
    groups = []
    for linear in linears:
        group = head_group(linear, outputs)
        if group is not None:
            groups.append(group)
    return groups
