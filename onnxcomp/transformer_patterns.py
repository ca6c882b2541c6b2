"""Transformer structure in an onnx_ir graph: linear layers, sibling groups, foldable producers.

A *linear* is a MatMul with a constant 2-D weight [K, N] (optionally followed by an Add of a
constant [N] bias), or a Gemm with a constant B. A *group* is every linear that reads the same
activation (Q, K and V after one norm; gate and up after another). A group's *producer* is what
a per-input-channel scale can be folded into without changing the model:

- a norm: LayerNormalization / SimplifiedLayerNormalization / RMSNormalization, or the
  decomposed forms ending in `Mul(core, gamma)` (+ `Add(beta)`) with constant per-channel gamma
  and beta; the core (Pow/ReduceMean/Add/Sqrt/Div or Reciprocal/Mul, with or without mean
  subtraction) is classified for the report, the fold only touches gamma and beta;
- a linear layer reached through a channel-preserving path: Reshape/Transpose/Unsqueeze/
  Squeeze/Expand/Identity, the value operand of an attention MatMul (probabilities · V), or one
  operand of an elementwise Mul (the gated product of an MLP). Which producer channel feeds
  which input channel (`channel_map`) is found by pushing channel ids through the path, so
  head reshapes and grouped-query repeats (one V channel feeding several heads) come out right.

Folding is valid only when nothing else reads the values it changes: every value on the path,
and the group input itself, must be read by the path (or the group) alone; otherwise the group
gets no producer and `reason` says why.
"""

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from .graph import constant_array

NORM_OPS = {"LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization"}
PATH_OPS = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Expand", "Identity"}


@dataclass
class Linear:
    node: ir.Node
    weight: ir.Value
    in_axis: int  # the weight axis indexing input channels (K)
    bias: ir.Value | None = None  # constant [N] added to the output: Gemm C, or a following Add
    output: ir.Value | None = None  # the layer output, after the bias Add when there is one

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class NormProducer:
    kind: str
    node: ir.Node  # the node that applies gamma (the norm op, or the Mul)
    scale: ir.Value  # gamma
    bias: ir.Value | None  # beta

    @property
    def description(self) -> str:
        return f"{self.kind} {self.node.name}"


@dataclass
class LinearProducer:
    linear: Linear
    path: list[ir.Node]  # from the producer's output to the group input

    @property
    def description(self) -> str:
        via = "/".join(dict.fromkeys(n.op_type for n in self.path)) or "direct"
        return f"linear {self.linear.name} (via {via})"


@dataclass
class LinearGroup:
    input: ir.Value
    linears: list[Linear]
    producer: NormProducer | LinearProducer | None = None
    channel_map: np.ndarray | None = None  # input channel j is producer channel channel_map[j]
    reason: str = ""  # why there is no foldable producer
    problems: list[str] = field(default_factory=list)  # why the group cannot be smoothed at all

    @property
    def name(self) -> str:
        return "+".join(linear.name for linear in self.linears)


def _single_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _bias_after(output: ir.Value, n: int) -> tuple[ir.Value | None, ir.Value]:
    """A constant [N] bias Add that is the only reader of a MatMul output: (bias, Add output)."""
    uses = output.uses()
    if len(uses) != 1 or output.is_graph_output():
        return None, output
    add = uses[0].node
    if add.op_type != "Add" or add.domain != "":
        return None, output
    other = add.inputs[1 - uses[0].idx]
    array = constant_array(other)
    if array is None or array.shape != (n,):
        return None, output
    return other, add.outputs[0]


def as_linear(node: ir.Node) -> Linear | None:
    """The node as a linear layer with a constant weight, or None."""
    if node.domain != "" or node.op_type not in ("MatMul", "Gemm") or len(node.inputs) < 2:
        return None
    weight = node.inputs[1]
    array = constant_array(weight)
    if array is None or array.ndim != 2 or array.dtype.kind != "f":
        return None
    if node.op_type == "MatMul":
        bias, output = _bias_after(node.outputs[0], array.shape[1])
        return Linear(node, weight, 0, bias, output)
    attrs = node.attributes
    if attrs.get("transA") is not None and attrs["transA"].as_int():
        return None
    trans_b = attrs.get("transB") is not None and attrs["transB"].as_int()
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    bias_array = constant_array(bias)
    n = array.shape[0] if trans_b else array.shape[1]
    if bias is not None and (bias_array is None or bias_array.shape != (n,)):
        bias = None  # a broadcast or run-time C: not foldable as a per-channel bias
    return Linear(node, weight, 1 if trans_b else 0, bias, node.outputs[0])


def linear_producing(value: ir.Value) -> Linear | None:
    """The linear layer whose (biased) output is exactly `value`, read by nothing else on the way."""
    producer = value.producer()
    if producer is None:
        return None
    linear = as_linear(producer)
    if linear is not None and linear.output is value:
        return linear
    if producer.op_type == "Add":
        for operand in producer.inputs:
            inner = operand.producer() if operand is not None else None
            linear = as_linear(inner) if inner is not None else None
            if linear is not None and linear.output is value:
                return linear
    return None


def _norm_kind(core: ir.Value) -> str:
    """Classify the normalization computing `core` from the ops a few steps above it."""
    ops, frontier = set(), [core]
    for _ in range(6):
        parents = []
        for value in frontier:
            node = value.producer() if value is not None else None
            if node is not None:
                ops.add(node.op_type)
                parents.extend(node.inputs)
        frontier = parents
    if {"ReduceMean", "Sqrt"} <= ops:
        return "LayerNorm (decomposed)" if "Sub" in ops else "RMSNorm (decomposed)"
    return "per-channel affine"


def _per_channel(value: ir.Value | None, channels: int) -> bool:
    array = constant_array(value)
    return array is not None and array.size == channels and array.shape[-1] == channels and array.dtype.kind == "f"


def find_norm(value: ir.Value, channels: int) -> tuple[NormProducer | None, str]:
    """The norm whose gamma (and beta) scale `value` per channel, or (None, why not)."""
    node = value.producer()
    if node is None:
        return None, "input is a graph input"
    if node.op_type in NORM_OPS and node.outputs[0] is value:
        scale = node.inputs[1] if len(node.inputs) > 1 else None
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if not _per_channel(scale, channels) or (bias is not None and not _per_channel(bias, channels)):
            return None, f"{node.op_type} {node.name} has no constant per-channel scale"
        norm = NormProducer(node.op_type, node, scale, bias)
    else:
        bias = None
        if node.op_type == "Add" and node.domain == "":
            consts = [v for v in node.inputs if constant_array(v) is not None]
            if len(consts) != 1 or not _per_channel(consts[0], channels):
                return None, f"produced by {node.op_type} {node.name}"
            bias = consts[0]
            inner = next(v for v in node.inputs if v is not bias)
            if inner.producer() is None or not _single_use(inner):
                return None, f"produced by {node.op_type} {node.name}"
            node = inner.producer()
        if node.op_type != "Mul" or node.domain != "":
            return None, f"produced by {node.op_type} {node.name}"
        consts = [v for v in node.inputs if constant_array(v) is not None]
        if len(consts) != 1 or not _per_channel(consts[0], channels):
            return None, f"produced by {node.op_type} {node.name}"
        core = next(v for v in node.inputs if v is not consts[0])
        norm = NormProducer(_norm_kind(core), node, consts[0], bias)
    owners = {id(norm.node), id(value.producer())}
    for const in (norm.scale, norm.bias):
        others = [u.node for u in const.uses() if id(u.node) not in owners] if const is not None else []
        if others:
            return None, f"norm constant {const.name!r} is shared with node {others[0].name!r}"
    return norm, ""


def _trace_to_linear(value: ir.Value, path: list[ir.Node]) -> tuple[Linear, list[ir.Node]] | None:
    """Walk up a channel-preserving path from `value` to a linear layer; None if there is none."""
    linear = linear_producing(value)
    if linear is not None:
        return linear, path
    node = value.producer()
    if node is None or node.domain != "":
        return None
    candidates: list[ir.Value] = []
    if node.op_type in PATH_OPS:
        candidates = [node.inputs[0]]
    elif node.op_type == "MatMul" and constant_array(node.inputs[1]) is None:
        candidates = [node.inputs[1]]  # probabilities · V: the sequence axis mixes, channels do not
    elif node.op_type == "Mul" and all(constant_array(v) is None for v in node.inputs):
        candidates = [v for v in node.inputs if v.shape is not None and v.shape == value.shape]
    for candidate in candidates:
        if candidate is None or not _single_use(candidate):
            continue
        found = _trace_to_linear(candidate, [node, *path])
        if found is not None:
            return found
    return None


def _concrete_shape(value: ir.Value) -> tuple[int, ...] | None:
    """The value's shape with symbolic dims (batch, sequence) set to 1; None when unknown."""
    if value.shape is None:
        return None
    dims = []
    for dim in value.shape:
        dims.append(dim if isinstance(dim, int) else 1)
    return tuple(dims)


def channel_map_along(linear: Linear, path: list[ir.Node], target: ir.Value) -> np.ndarray | None:
    """For each channel (last axis) of `target`, the producer output channel it copies.

    Channel ids are pushed through the path's ops in numpy, with dynamic dims set to 1, so the
    map follows reshapes into heads, transposes and grouped-query expands exactly.
    """
    n = constant_array(linear.weight).shape[1 - linear.in_axis]
    shape = _concrete_shape(linear.output)
    if shape is None or shape[-1] != n:
        return None
    ids = np.broadcast_to(np.arange(n, dtype=np.float64), shape)
    try:
        for node in path:
            out_shape = _concrete_shape(node.outputs[0])
            if out_shape is None:
                return None
            if node.op_type == "Transpose":
                perm = node.attributes.get("perm")
                ids = np.transpose(ids, perm.as_ints() if perm is not None else None)
            elif node.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Identity"):
                ids = ids.reshape(out_shape)
            else:  # Expand, MatMul(P, V) with one position, Mul: a broadcast of the ids
                ids = np.broadcast_to(ids, out_shape)
            if ids.shape != out_shape:
                return None
    except ValueError:
        return None
    rows = ids.reshape(-1, ids.shape[-1])
    if not (rows == rows[:1]).all():
        return None
    return rows[0].astype(np.int64)


def find_linear_groups(model: ir.Model) -> list[LinearGroup]:
    """Every group of linears sharing one activation input, in graph order, with its producer."""
    groups: dict[int, LinearGroup] = {}
    for node in model.graph:
        linear = as_linear(node)
        if linear is None or node.inputs[0] is None or constant_array(node.inputs[0]) is not None:
            continue
        key = id(node.inputs[0])
        if key not in groups:
            groups[key] = LinearGroup(node.inputs[0], [])
        groups[key].linears.append(linear)
    for group in groups.values():
        _describe(group)
    return list(groups.values())


def _describe(group: LinearGroup) -> None:
    """Fill the group's producer and channel map, or the reasons it has none."""
    channels = {constant_array(lin.weight).shape[lin.in_axis] for lin in group.linears}
    if len(channels) != 1:
        group.problems.append("linears disagree on the number of input channels")
        return
    k = channels.pop()
    for linear in group.linears:
        others = [u.node.name for u in linear.weight.uses() if u.node is not linear.node]
        if others:
            group.problems.append(f"weight {linear.weight.name!r} of {linear.name} is shared with node {others[0]!r}")
    members = {id(lin.node) for lin in group.linears}
    outsiders = [u.node for u in group.input.uses() if id(u.node) not in members]
    if outsiders or group.input.is_graph_output():
        reader = f"{outsiders[0].op_type} {outsiders[0].name}" if outsiders else "a graph output"
        group.reason = f"input {group.input.name!r} is also read by {reader}"
        return
    norm, why_not_norm = find_norm(group.input, k)
    if norm is not None:
        group.producer, group.channel_map = norm, np.arange(k)
        return
    traced = _trace_to_linear(group.input, [])
    if traced is None:
        group.reason = why_not_norm if "shared" in why_not_norm else f"no norm or linear producer ({why_not_norm})"
        return
    linear, path = traced
    mapping = channel_map_along(linear, path, group.input)
    if mapping is None or mapping.shape != (k,):
        group.reason = f"cannot map channels from {linear.name} through {'/'.join(n.op_type for n in path)}"
        return
    for const in (linear.weight, linear.bias):
        owners = {id(linear.node), id(linear.output.producer())}
        if const is not None and any(id(u.node) not in owners for u in const.uses()):
            group.reason = f"producer constant {const.name!r} of {linear.name} is shared with another node"
            return
    group.producer, group.channel_map = LinearProducer(linear, path), mapping
