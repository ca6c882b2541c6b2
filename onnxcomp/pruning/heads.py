"""Attention-head groups: Q/K/V output columns and O input rows of whole heads, found on the graph.

Walking up from an output projection O (a linear whose input is the heads merged back):
Reshape ← Transpose ← MatMul(P, V) with P ← Softmax ← (scale, mask) ← MatMul(Q, Kᵀ), and each
of Q, K, V ← (rotary embedding: Slice/Neg/Concat/Mul on the last axis) ← Transpose ← Reshape
[.., H, d] ← a linear producer. Head h owns the producers' output columns h·d … h·d+d−1 and O's
input rows of the same numbers, so a head is removed by slicing those, and every tensor on the
way has one axis of size H that shrinks with it.

Grouped-query attention (K/V of H_kv heads, each read by r = H/H_kv query heads through
Unsqueeze → Expand [.., H_kv, r, ..] → Reshape [.., H, ..]): the channels are the H query heads,
query head h reads KV head h // r, and they are kept in equal numbers per KV head (`kv_heads`),
so K and V are left whole (`readers`) and the Expand's r and the Reshape's H are rewritten.

Shape constants that hold H, H·d or r on the query side are rewritten (`ShapeEntry`), each
node getting its own copy (exports share one shape between layers). Recognised only when nothing
outside reads the path, the split shape gives H and d statically, every head count in a shape is
a constant entry (a count computed at run time is reported), and slices and concats on the path
work on another axis than the heads'.
"""

from fractions import Fraction

import onnx_ir as ir

from onnxcomp.ir.graph import constant_array
from onnxcomp.ir.linears import Linear
from onnxcomp.pruning.group import PruneGroup, ShapeEntry

PATH_OPS = {
    "Reshape", "Transpose", "Softmax", "Mul", "Div", "Add", "Sub", "Where", "Cast", "Identity",
    "Expand", "Unsqueeze", "Slice", "Neg", "Concat",
}  # fmt: skip
DATA_ONLY = {"Reshape", "Expand", "Unsqueeze", "Slice", "Transpose"}  # other inputs are shapes/axes


class _NoHeads(Exception):
    pass


def _shape_entries(value: ir.Value) -> list[int | None] | None:
    """A shape input's entries (None where computed at run time), or None when not known: a
    constant, or a Concat of one-element pieces."""
    array = constant_array(value)
    if array is not None:
        return [int(x) for x in array.ravel()]
    node = value.producer()
    if node is None or node.op_type != "Concat":
        return None
    entries: list[int | None] = []
    for piece in node.inputs:
        if piece is None or piece.shape is None or list(piece.shape) != [1]:
            return None
        array = constant_array(piece)
        entries.append(None if array is None else int(array.ravel()[0]))
    return entries


def _walk_up(value: ir.Value, outputs: dict, nodes: list, producers: list, reshapes: list, depth=0) -> None:
    linear = outputs.get(value)
    if linear is not None:
        if linear not in producers:
            producers.append(linear)
        return
    node = value.producer()
    if node is None or node.domain != "" or depth > 40:
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
    operands = node.inputs[:1] if node.op_type in DATA_ONLY else node.inputs
    for operand in operands:
        if operand is None or constant_array(operand) is not None:
            continue
        if node.op_type in ("Add", "Sub", "Where", "Mul", "Div") and _is_side_input(operand, node):
            continue  # the mask, a scale tensor or rotary cos/sin broadcast over heads: not on the heads' path
        _walk_up(operand, outputs, nodes, producers, reshapes, depth + 1)


def _is_side_input(operand: ir.Value, node: ir.Node) -> bool:
    """A computed operand of an elementwise node that broadcasts (has a 1 where the output has heads)."""
    out = node.outputs[0].shape
    if out is None or operand.shape is None:
        return False
    return len(operand.shape) == len(out) and any(a == 1 and b != 1 for a, b in zip(operand.shape, out))


class _Layout:
    """Which axis of each value on the path holds the heads, and what it shrinks by.

    With `groups` (grouped-query attention cut in whole KV groups) a channel is one KV head with
    its r = H / H_kv query heads: query-side sizes count r heads per channel, and the K/V side
    shrinks too (its KV-head axis, one per channel)."""

    def __init__(self, heads: int, dim: int, kv: int, groups: bool = False):
        self.heads, self.dim, self.kv, self.groups = heads, dim, kv, groups
        self.r = heads // kv if groups else 1  # query heads per channel
        self.channels = kv if groups else heads

    def axis(self, value: ir.Value) -> tuple[int, int | Fraction] | None:
        """(axis from the end, size per kept channel), or None for a K/V-side value left whole."""
        dims = list(value.shape) if value.shape is not None else []
        node = value.producer()
        if node is not None and node.op_type == "Expand" and self.kv > 1:
            before = node.inputs[0].shape
            if len(dims) != 5 or before is None or len(before) != 5:
                raise _NoHeads(f"Expand {node.name} is not a [.., H_kv, r, ..] head repeat")
            axes = [i for i in range(5) if before[i] == 1 and dims[i] == self.heads // self.kv]
            if len(axes) != 1 or dims[axes[0] - 1] != self.kv:
                raise _NoHeads(f"Expand {node.name} repeats no single axis after the KV heads")
            if self.groups:  # whole KV groups go: the KV-head axis shrinks, the repeat stays
                return axes[0] - 6, 1
            return axes[0] - 5, Fraction(1, self.kv)
        if len(dims) == 3 and dims[-1] == self.heads * self.dim:
            return -1, self.dim * self.r
        if len(dims) in (3, 5) and self.kv > 1 and self.heads not in dims:
            if not self.groups:
                return None
            if len(dims) == 3 and dims[-1] == self.kv * self.dim:
                return -1, self.dim
            if len(dims) == 5 and dims.count(self.kv) == 1:
                return dims.index(self.kv) - 5, 1
        if len(dims) == 4:
            axes = [i for i, d in enumerate(dims) if d == self.heads]
            if len(axes) == 1:
                return axes[0] - 4, self.r
            if not axes and self.kv > 1 and dims.count(self.kv) == 1:
                return (dims.index(self.kv) - 4, 1) if self.groups else None
        raise _NoHeads(f"value {value.name!r} has no single head axis")


def _check_axes(node: ir.Node, layout: _Layout) -> None:
    """Slices and concats on the path must not work on the head axis."""
    if node.op_type not in ("Slice", "Concat"):
        return
    found = layout.axis(node.outputs[0])
    dims = list(node.outputs[0].shape)
    if found is None and dims.count(layout.kv) != 1:
        raise _NoHeads(f"{node.op_type} {node.name}'s head axis is ambiguous")
    rank = len(dims)
    head = dims.index(layout.kv) if found is None else rank + found[0]
    if node.op_type == "Concat":
        axes = [int(node.attributes["axis"].value)]
    else:
        array = constant_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
        if array is None:
            raise _NoHeads(f"Slice {node.name} has no constant axes")
        axes = [int(a) for a in array.ravel()]
    if head in [a % rank for a in axes]:
        raise _NoHeads(f"{node.op_type} {node.name} works on the head axis")


def _entries(node: ir.Node, layout: _Layout, group: PruneGroup) -> None:
    """ShapeEntry for each head count in a query-side Reshape/Expand shape."""
    found = layout.axis(node.outputs[0])
    if found is None:
        return
    axis, per = found
    shape = node.outputs[0].shape
    entries = _shape_entries(node.inputs[1])
    index = len(shape) + axis
    if entries is None or len(entries) != len(shape):
        raise _NoHeads(f"{node.op_type} {node.name}'s shape is computed at run time")
    full = layout.channels * per
    if entries[index] == full:
        group.entries.append(ShapeEntry(node, index, Fraction(per)))
    elif entries[index] is None or (entries[index] not in (-1, 0) and node.op_type == "Reshape"):
        raise _NoHeads(f"{node.op_type} {node.name}'s head count is computed at run time")
    elif node.op_type == "Expand" and entries[index] != full:
        raise _NoHeads(f"Expand {node.name}'s repeat is not a constant")
    if node.op_type == "Reshape":  # 0 copies an input dim; no other entry may hold the head count
        others = [e for i, e in enumerate(entries) if i != index]
        if any(e in (layout.heads, layout.heads * layout.dim) for e in others if e is not None):
            raise _NoHeads(f"Reshape {node.name} has the head count on another axis")


def head_group(consumer: Linear, outputs: dict[ir.Value, Linear], kv_groups: bool = False) -> PruneGroup | None:
    """The head group whose merged heads `consumer` reads, None when its input is not a head merge,
    or a group with `reason` when it is one that cannot be pruned. `kv_groups`: under grouped-query
    attention a channel is a whole KV group (its KV head, K/V columns cut too, and its query heads)."""
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
    queries = [p for p in producers if p.n == consumer.k]
    group = PruneGroup("heads", 0, producers=queries[:1], consumers=[consumer])
    split = next((r for r in reshapes if queries and r.inputs[0] is queries[0].output), None)
    shape = split.outputs[0].shape if split is not None else None
    if shape is None or len(shape) != 4 or not isinstance(shape[-2], int) or not isinstance(shape[-1], int):
        group.reason = "the heads' split shape is not static" if queries else "no Q projection as wide as O's input"
        return group
    heads, dim = int(shape[-2]), int(shape[-1])
    group.channels, group.repeat, group.block = heads, dim, dim
    others = [p for p in producers if p is not queries[0]]
    widths = {p.n for p in others}
    kv = widths.pop() // dim if len(widths) == 1 else 0
    if consumer.k != heads * dim or kv < 1 or heads % kv or others[0].n != kv * dim:
        group.reason = f"Q/K/V widths {sorted(p.n for p in producers)} do not split into {heads} heads of {dim}"
        return group
    if heads == dim or (kv < heads and kv == dim):
        group.reason = "head count equals another dimension: the head axis is ambiguous"
        return group
    groups = kv_groups and kv < heads
    if kv == heads:
        group.producers = producers
    elif groups:  # channels = KV groups: Q/O in blocks of r heads, K/V in blocks of one head
        group.producers = [queries[0], *others]
        group.channels, group.repeat, group.block = kv, dim * (heads // kv), dim * (heads // kv)
        group.blocks = {p: dim for p in others}
    else:
        group.kv_heads, group.readers = kv, others
    layout = _Layout(heads, dim, kv, groups)
    try:
        for node in nodes:
            _check_axes(node, layout)
            if node.op_type in ("Reshape", "Expand"):
                _entries(node, layout, group)
            for out in node.outputs:
                if (found := layout.axis(out)) is not None:
                    group.values[out] = found
        for p in group.producers:
            for value in (p.output, p.node.outputs[0]):
                group.values[value] = (-1, group.blocks.get(p, group.block))
    except _NoHeads as skip:
        group.reason = str(skip)
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
    return group


def heads_of(model: ir.Model, linears: list[Linear], kv_groups: bool = False) -> list[PruneGroup]:
    """Every attention-head group of the model (including skipped ones with their reasons)."""
    outputs = {lin.output: lin for lin in linears}
    groups = []
    for linear in linears:
        group = head_group(linear, outputs, kv_groups)
        if group is not None:
            groups.append(group)
    return groups
