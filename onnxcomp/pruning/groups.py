"""Dependency groups: the channels that must be removed together, found on the ONNX graph.

A group starts at a *producer* — a linear layer (`onnxcomp.ir.linears.Linear`: MatMul, Gemm or
Conv with a constant weight) — and follows its output channels forward until they are consumed
by the input channels of other linear layers (*consumers*). On the way, only operators that keep
channels apart are allowed:

- elementwise ops (`ELEMENTWISE`: Relu, Gelu, Sigmoid, Add, Mul, …) whose other operands are
  scalars, per-channel constants (sliced with the group) or computed tensors that themselves come
  from producers of the same channels (the gate and up projections of a gated MLP: `silu(g) · u`
  joins g and u into one group);
- residual Adds: the other operand is followed back (through elementwise ops) to its producers,
  which join the group (`residual`): a residual stream — the stem conv, each block's last conv,
  a 1×1 projection, recursively through chains of residual Adds — is ONE group, its consumers
  every linear reading any tensor of the stream;
- pooling over space (MaxPool, AveragePool, GlobalAveragePool/GlobalMaxPool, ReduceMean/ReduceMax
  over the spatial axes only) on a channel-first tensor;
- a flatten of [N, C, H, W] into [N, C·H·W] (Flatten, or a Reshape with a constant shape): the
  consumer's input rows then come in blocks of H·W per channel, and a Reshape's shape constant is
  rewritten with the group;
- a Concat along the channels (the group's channels sit after the earlier inputs' in the
  consumer's rows, `Window`; the other inputs stay whole) and a Split along the channels with
  constant sizes (each part carries a slice of the group's channels; the sizes are rewritten).

So the groups found are CNN filters (Conv → Relu → Conv, Conv → Relu → MaxPool → Flatten →
Gemm), residual streams, and MLP neurons (BERT intermediate → Gelu → output; LLaMA gate/up →
SiLU·Mul → down). A depthwise conv on the way (group = channels, multiplier 1) is passed: its
filters and bias are sliced with the group and its `group` attribute rewritten. Anything else on
the way makes the whole group (every producer joined so far) *skipped*, with the reason, and it is
left alone: a norm over the channels (LayerNorm/RMSNorm, also decomposed as ReduceMean: it mixes
the channels, so a transformer's hidden size stays whole), a head reshape or any Reshape that is
not a flatten, a graph output, an operand from outside (a graph input), a grouped conv or a
depthwise one with a channel multiplier, a Concat input of unknown channel count, a Split without
constant sizes, a Concat reading the group twice, a weight or constant shared with nodes outside
the group. Attention heads (Q/K/V → heads → O) are found first by `onnxcomp.pruning.heads` (kind
"heads": a channel is a whole head).
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.graph import constant_array
from onnxcomp.ir.linears import Linear, linear_of
from onnxcomp.pruning.group import ConstantSlice, PruneGroup, ShapeRewrite, SplitSizes, Window
from onnxcomp.pruning.heads import heads_of

ELEMENTWISE = {
    "Relu", "Gelu", "Sigmoid", "Tanh", "Erf", "Softplus", "Elu", "Selu", "LeakyRelu", "HardSigmoid",
    "HardSwish", "Mish", "Identity", "Neg", "Abs", "Exp", "Sqrt", "Clip",
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min",
}  # fmt: skip
POOLS = {"MaxPool", "AveragePool"}
GLOBAL_POOLS = {"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax"}  # over space only
NORMS = {
    "LayerNormalization", "SimplifiedLayerNormalization", "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization", "RMSNormalization", "GroupNormalization",
    "InstanceNormalization", "LpNormalization",
}  # fmt: skip


class _Skip(Exception):
    pass


def _channel_axis(linear: Linear) -> int:
    """The output's channel axis counted from the end: -1 (MatMul/Gemm), -3 (Conv 2-D)."""
    return -(linear.array.ndim - 1) if linear.node.op_type == "Conv" else -1


class _Walker:
    def __init__(self, outputs: dict[ir.Value, Linear], first: Linear):
        self.outputs = outputs
        self.kind = "channels" if first.node.op_type == "Conv" else "ffn"
        self.group = PruneGroup(self.kind, first.n)
        self.nodes: set[ir.Node] = set()
        self.todo: list[ir.Value] = []
        self.consumer_nodes: set[ir.Node] = set()
        self.concats: dict[ir.Node, int] = {}  # Concat → the input the group's channels come in by

    def width(self, window: Window | None) -> int:
        """Channels of a tensor on the group's path (more after a Concat, fewer in a Split part)."""
        return self.group.channels if window is None else window.width()

    def norm_reason(self, node: ir.Node) -> str:
        where = "a residual stream's" if self.group.residual else "the"
        return (
            f"{node.op_type} {node.name} normalizes over {where} channels (it mixes them: a transformer's "
            "hidden size is left whole)"
        )

    def add_value(self, value: ir.Value, axis: int, per: int, window: Window | None = None) -> None:
        known = self.group.values.get(value)
        if known is not None:
            if known != (axis, per) or self.group.windows.get(value) != window:
                raise _Skip(f"value {value.name!r} is reached with two channel layouts")
            return
        shape, width = value.shape, self.width(window)
        if shape is not None:
            dim = shape[axis] if len(shape) >= -axis else None
            if dim is None or (isinstance(dim, int) and dim != width * per):
                raise _Skip(f"value {value.name!r} does not have {width} channels on axis {axis}")
        self.group.values[value] = (axis, per)
        if window is not None:
            self.group.windows[value] = window
        self.todo.append(value)

    def add_producer(self, linear: Linear) -> None:
        if linear in self.group.producers:
            return
        if linear.node.op_type == "Conv" and _attr_int(linear.node, "group", 1) != 1:
            raise _Skip(f"{linear.name} is a grouped/depthwise Conv")
        if linear.n != self.group.channels or ("Conv" == linear.node.op_type) != (self.kind == "channels"):
            raise _Skip(f"producers {self.group.producers[0].name} and {linear.name} do not match")
        _own(linear.weight, {linear.node})
        if linear.bias is not None:
            _own(linear.bias, {linear.node, linear.output.producer()})
        self.group.producers.append(linear)
        self.nodes.add(linear.node)
        if linear.output is not linear.node.outputs[0]:
            self.nodes.add(linear.output.producer())
            self.add_value(linear.node.outputs[0], -1, 1)
        self.add_value(linear.output, _channel_axis(linear), 1)

    def walk(self) -> None:
        while self.todo:
            value = self.todo.pop()
            if value.is_graph_output():
                raise _Skip(f"value {value.name!r} is a graph output")
            for use in list(value.uses()):
                node = use.node
                if node in self.concats and use.idx != self.concats[node]:
                    raise _Skip(f"Concat {node.name} reads the group's channels twice")
                if node in self.nodes or node in self.consumer_nodes:
                    continue
                self.visit(node, value, use.idx)

    def visit(self, node: ir.Node, value: ir.Value, idx: int) -> None:
        axis, per = self.group.values[value]
        window = self.group.windows.get(value)
        linear = linear_of(node)
        if linear is not None and idx == 0 and _attr_int(node, "group", 1) == self.width(window) > 1:
            if window is not None:
                raise _Skip(f"depthwise Conv {node.name} reads a Concat or Split of the channels")
            self.depthwise(linear, axis, per)
            return
        if linear is not None and idx == 0:
            self.add_consumer(linear, axis, per, window)
            return
        if node.op_type in ("Concat", "Split") and node.domain == "":
            if window is not None or per != 1 or value.shape is None:
                raise _Skip(f"{node.op_type} {node.name} follows a Concat or Split of the channels, or a flatten")
            self.nodes.add(node)
            (self.concat if node.op_type == "Concat" else self.split)(node, value, idx, axis)
            return
        if node.op_type in NORMS or (node.op_type in GLOBAL_POOLS and not _over_space(node, value, axis, per)):
            if node.op_type in NORMS or node.op_type == "ReduceMean":  # a decomposed LayerNorm/RMSNorm
                raise _Skip(self.norm_reason(node))
            raise _Skip(f"{node.op_type} {node.name} reduces over the channels")
        if node.domain != "" or node.op_type not in ELEMENTWISE | POOLS | GLOBAL_POOLS | {"Flatten", "Reshape"}:
            raise _Skip(f"{node.op_type} {node.name} reads the channels")
        self.nodes.add(node)
        if node.op_type in GLOBAL_POOLS:
            keep = _attr_int(node, "keepdims", 1) == 1 or node.op_type.startswith("Global")
            self.add_value(node.outputs[0], axis if keep else -1, 1, window)
        elif node.op_type in POOLS:
            if per != 1 or value.shape is None or len(value.shape) + axis != 1:
                raise _Skip(f"{node.op_type} {node.name} does not pool a channel-first tensor")
            self.add_value(node.outputs[0], axis, 1, window)
        elif node.op_type in ("Flatten", "Reshape"):
            if per != 1 or value.shape is None or len(value.shape) + axis != 1:
                raise _Skip(
                    f"{node.op_type} {node.name} reshapes the channels "
                    "(a head split that is not plain multi-head attention)"
                )
            self.flatten(node, value, axis, window)
        else:
            for i, operand in enumerate(node.inputs):
                if i != idx and operand is not None:
                    self.operand(node, operand, axis, per, window)
            self.add_value(node.outputs[0], axis, per, window)

    def concat(self, node: ir.Node, value: ir.Value, idx: int, axis: int) -> None:
        """A Concat along the channels: the consumers' rows of the group's channels come after the
        earlier inputs' (offset = their channel counts, read when the group is cut); the other
        inputs stay whole."""
        rank = len(value.shape)
        if _attr_int(node, "axis", 0) % rank != rank + axis:
            raise _Skip(f"Concat {node.name} joins along another axis than the channels")
        for i, other in enumerate(node.inputs):
            dim = None if other is None or other.shape is None else other.shape[rank + axis]
            if not isinstance(dim, int):
                raise _Skip(f"Concat {node.name}: the channel count of input {i} is unknown")
            if i != idx and other in self.group.values:
                raise _Skip(f"Concat {node.name} reads the group's channels twice")
        self.concats[node] = idx
        channels = self.group.channels
        self.add_value(node.outputs[0], axis, 1, Window(0, channels, node, idx, rank + axis))

    def split(self, node: ir.Node, value: ir.Value, idx: int, axis: int) -> None:
        """A Split along the channels: each part carries a slice of the group's channels, and the
        constant split sizes become the kept count of each part."""
        rank, channels = len(value.shape), self.group.channels
        if _attr_int(node, "axis", 0) % rank != rank + axis:
            raise _Skip(f"Split {node.name} splits another axis than the channels")
        sizes = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
        if sizes is None:
            raise _Skip(f"Split {node.name} has no constant split sizes (computed at run time, or num_outputs)")
        if sizes.ndim != 1 or int(sizes.sum()) != channels or len(sizes) != len(node.outputs):
            raise _Skip(f"Split {node.name} sizes {sizes.tolist()} do not split {channels} channels")
        _own(node.inputs[1], {node})
        ends = np.cumsum(sizes).tolist()
        bounds = [(int(lo), int(hi)) for lo, hi in zip([0, *ends[:-1]], ends)]
        self.group.splits.append(SplitSizes(node, bounds))
        for output, (lo, hi) in zip(node.outputs, bounds):
            self.add_value(output, axis, 1, Window(lo, hi))

    def depthwise(self, linear: Linear, axis: int, per: int) -> None:
        """A depthwise Conv (group = channels, one filter per channel) keeps the channels apart:
        its filters and bias are sliced with the group and its `group` attribute becomes the kept
        count; the walk goes on from its output. A channel multiplier above 1 is left alone."""
        node = linear.node
        if per != 1 or axis != _channel_axis(linear) or linear.array.shape[:2] != (self.group.channels, 1):
            raise _Skip(f"depthwise Conv {node.name} has a channel multiplier or reads another layout")
        _own(linear.weight, {node})
        self.group.constants.append(ConstantSlice(linear.weight, 0))
        if linear.bias is not None:
            if linear.output is not node.outputs[0]:
                raise _Skip(f"depthwise Conv {node.name} has its bias in a separate Add")
            _own(linear.bias, {node})
            self.group.constants.append(ConstantSlice(linear.bias, 0))
        self.group.depthwise.append(node)
        self.nodes.add(node)
        self.add_value(node.outputs[0], axis, 1)

    def flatten(self, node: ir.Node, value: ir.Value, axis: int, window: Window | None) -> None:
        shape = value.shape
        if not all(isinstance(d, int) for d in shape[2:]):
            raise _Skip(f"{node.op_type} {node.name} flattens dynamic spatial dims")
        spatial = int(np.prod(shape[2:], dtype=np.int64))
        if node.op_type == "Flatten":
            if _attr_int(node, "axis", 1) != 1:
                raise _Skip(f"Flatten {node.name} does not flatten from axis 1")
        else:
            target = constant_array(node.inputs[1])
            if target is None:
                raise _Skip(f"Reshape {node.name} has a shape computed at run time")
            if target.shape != (2,):
                raise _Skip(f"Reshape {node.name} to {target.tolist()} is not a flatten")
            if target[1] == self.width(window) * spatial:
                _own(node.inputs[1], {node})
                self.group.shapes.append(ShapeRewrite(node.inputs[1], 1, spatial, window))
            elif target[1] != -1:
                raise _Skip(f"Reshape {node.name} to {target.tolist()} is not a flatten")
        self.add_value(node.outputs[0], -1, spatial, window)

    def operand(self, node: ir.Node, operand: ir.Value, axis: int, per: int, window: Window | None = None) -> None:
        if operand in self.group.values:
            if self.group.windows.get(operand) != window:
                raise _Skip(f"{node.op_type} {node.name} joins different parts of the channels")
            return
        array = constant_array(operand)
        if array is not None:
            self.constant(node, operand, array, axis, per, window)
            return
        if window is not None:
            raise _Skip(f"{node.op_type} {node.name} mixes {operand.name!r} into a Concat or Split of the channels")
        producer = operand.producer()
        linear = self.outputs.get(operand)
        if node.op_type in ("Add", "Sub"):
            self.group.residual = True
        if producer is not None and producer.op_type in NORMS:
            raise _Skip(self.norm_reason(producer))
        if linear is not None:
            self.add_producer(linear)
        elif producer is not None and producer.domain == "" and producer.op_type in ELEMENTWISE:
            self.nodes.add(producer)
            for other in producer.inputs:
                if other is not None:
                    self.operand(producer, other, axis, per)
            self.add_value(operand, axis, per)
        else:
            norm = _norm_ahead(node.outputs[0], axis) if self.group.residual else None
            if norm is not None:  # a transformer's residual stream: the norm is the reason it stays whole
                raise _Skip(self.norm_reason(norm))
            raise _Skip(f"{node.op_type} {node.name} mixes in {operand.name!r} from outside the group")

    def constant(self, node, value: ir.Value, array: np.ndarray, axis: int, per: int, window=None) -> None:
        if array.size == 1 or array.ndim < -axis or array.shape[axis] == 1:
            return
        width = self.width(window)
        if per != 1 or array.shape[axis] != width or array.size != width:
            raise _Skip(f"constant {value.name!r} of {node.name} is not per channel")
        _own(value, {node})
        self.group.constants.append(ConstantSlice(value, array.ndim + axis, window))

    def add_consumer(self, linear: Linear, axis: int, per: int, window: Window | None = None) -> None:
        if linear.node.op_type == "Conv":
            if _attr_int(linear.node, "group", 1) != 1:
                raise _Skip(f"consumer {linear.name} is a grouped/depthwise Conv")
            ok = per == 1 and axis == -(linear.array.ndim - 1)
        else:
            ok = axis == -1 and not linear.trans_a and linear.array.ndim == 2
        if not ok or linear.k != self.width(window) * per:
            raise _Skip(f"consumer {linear.name} does not read the channels as its input rows")
        if self.group.consumers and per != self.group.repeat:
            raise _Skip(f"consumers of {self.group.name} read different layouts")
        _own(linear.weight, {linear.node})
        self.group.repeat = per
        self.group.consumers.append(linear)
        if window is not None:
            self.group.consumer_windows[linear.node] = window
        self.consumer_nodes.add(linear.node)


def _norm_ahead(value: ir.Value, axis: int, hops: int = 4) -> ir.Node | None:
    """A norm (or a ReduceMean over channel axis `axis`: a decomposed one) reading `value` through
    at most `hops` elementwise ops, else None."""
    frontier = [value]
    for _ in range(hops):
        after = []
        for v in frontier:
            for use in v.uses():
                node = use.node
                if node.op_type in NORMS or (node.op_type == "ReduceMean" and _reduces(node, v, axis)):
                    return node
                if node.domain == "" and node.op_type in ELEMENTWISE:
                    after.extend(node.outputs)
        frontier = after
    return None


def _reduces(node: ir.Node, value: ir.Value, axis: int) -> bool:
    """Whether a ReduceMean reduces `value`'s axis `axis` (counted from the end); unknown → True."""
    axes = _axes(node)
    if axes is None or value.shape is None:
        return True
    return (len(value.shape) + axis) in {int(a) % len(value.shape) for a in np.ravel(axes)}


def _axes(node: ir.Node) -> np.ndarray | None:
    """A Reduce node's axes (input from opset 18, attribute before), None when not constant."""
    axes = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if axes is None:
        attr = node.attributes.get("axes")
        axes = None if attr is None else np.array(attr.value)
    return axes


def _over_space(node: ir.Node, value: ir.Value, axis: int, per: int) -> bool:
    """Whether a global pool or reduction runs over the spatial axes only of a channel-first
    tensor (the axes after the channels; keepdims=0 only when all of them go)."""
    shape = value.shape
    if per != 1 or shape is None or len(shape) + axis != 1 or len(shape) < 3:
        return False
    if node.op_type.startswith("Global"):
        return True
    axes = _axes(node)
    if axes is None:
        return False
    axes = sorted(int(a) % len(shape) for a in np.ravel(axes))
    spatial = list(range(2, len(shape)))
    return axes == spatial if _attr_int(node, "keepdims", 1) == 0 else set(axes) <= set(spatial) and bool(axes)


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.value)


def _own(value: ir.Value, owners: set) -> None:
    others = [u.node for u in value.uses() if u.node not in owners]
    if others or value.is_graph_output() or value.is_graph_input():
        where = f"node {others[0].name!r}" if others else "the graph's inputs/outputs"
        raise _Skip(f"constant {value.name!r} is shared with {where}")


def find_groups(model: ir.Model, kv_groups: bool = False) -> list[PruneGroup]:
    """Every dependency group in graph order, each from its first producer; skipped ones carry
    `reason`. A producer belongs to at most one group."""
    linears = [lin for node in model.graph if (lin := linear_of(node)) is not None]
    outputs = {lin.output: lin for lin in linears}
    groups = heads_of(model, linears, kv_groups)
    taken: set[ir.Node] = {p.node for g in groups for p in g.producers + g.readers}
    for linear in linears:
        if linear.node in taken or constant_array(linear.node.inputs[0]) is not None:
            continue
        walker = _Walker(outputs, linear)
        try:
            walker.add_producer(linear)
            walker.walk()
            if not walker.group.consumers:
                raise _Skip("no consumer reads the channels")
        except _Skip as skip:  # the whole joined group (a residual stream's producers) is left alone
            producers = walker.group.producers or [linear]
            group = PruneGroup(walker.kind, linear.n, producers=producers, reason=str(skip))
            group.residual = walker.group.residual
            taken.update(p.node for p in producers)
            groups.append(group)
            continue
        taken.update([p.node for p in walker.group.producers] + walker.group.depthwise)
        groups.append(walker.group)
    return groups
