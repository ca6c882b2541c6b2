"""Transformer structure in an onnx_ir graph: linear layers, sibling groups, foldable producers.

A *linear* is `onnxcomp.ir.linears.matrix_linear`: a MatMul with a constant 2-D weight [K, N]
(optionally followed by an Add of a constant [N] bias), or a Gemm with a constant B. A *group* is
every linear that reads the same activation (Q, K and V after one norm; gate and up after
another). A group's *producer* is what a per-input-channel scale can be folded into without
changing the model:

- a norm: LayerNormalization / SimplifiedLayerNormalization / RMSNormalization, or the
  decomposed forms ending in `Mul(core, gamma)` (+ `Add(beta)`) with constant per-channel gamma
  and beta; the core (Pow/ReduceMean/Add/Sqrt/Div or Reciprocal/Mul, with or without mean
  subtraction) is classified for the report, the fold only touches gamma and beta;
- a linear layer reached through a channel-preserving path, walked with the per-op rules of
  `onnxcomp.ir.channels` (Reshape/Transpose/Unsqueeze/Squeeze/Expand/Identity, the value operand
  of an attention MatMul, one operand of an elementwise Mul). Which producer channel feeds which
  input channel (`channel_map`) is found by pushing channel ids through the path, so head
  reshapes and grouped-query repeats (one V channel feeding several heads) come out right.

Folding is valid only when nothing else reads the values it changes: every value on the path,
and the group input itself, must be read by the path (or the group) alone; otherwise the group
gets no producer and `reason` says why.
"""

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.channels import channel_map, rule_for
from onnxcomp.ir.graph import constant_array
from onnxcomp.ir.linears import Linear, matrix_linear

NORM_OPS = {"LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization"}


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


def linear_producing(value: ir.Value) -> Linear | None:
    """The linear layer whose (biased) output is exactly `value`, read by nothing else on the way."""
    producer = value.producer()
    if producer is None:
        return None
    linear = matrix_linear(producer)
    if linear is not None and linear.output is value:
        return linear
    if producer.op_type == "Add":
        for operand in producer.inputs:
            inner = operand.producer() if operand is not None else None
            linear = matrix_linear(inner) if inner is not None else None
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
    owners = {norm.node, value.producer()}
    for const in (norm.scale, norm.bias):
        others = [u.node for u in const.uses() if u.node not in owners] if const is not None else []
        if others:
            return None, f"norm constant {const.name!r} is shared with node {others[0].name!r}"
    return norm, ""


def _trace_to_linear(value: ir.Value, path: list[ir.Node]) -> tuple[Linear, list[ir.Node]] | None:
    """Walk up a channel-preserving path from `value` to a linear layer; None if there is none."""
    linear = linear_producing(value)
    if linear is not None:
        return linear, path
    node = value.producer()
    if node is None:
        return None
    rule = rule_for(node)
    candidates = rule.carriers(node, value) if rule is not None else []
    for candidate in candidates:
        if candidate is None or not _single_use(candidate):
            continue
        found = _trace_to_linear(candidate, [node, *path])
        if found is not None:
            return found
    return None


def find_linear_groups(model: ir.Model) -> list[LinearGroup]:
    """Every group of linears sharing one activation input, in graph order, with its producer."""
    groups: dict[ir.Value, LinearGroup] = {}
    for node in model.graph:
        linear = matrix_linear(node)
        if linear is None or node.inputs[0] is None or constant_array(node.inputs[0]) is not None:
            continue
        key = node.inputs[0]
        if key not in groups:
            groups[key] = LinearGroup(node.inputs[0], [])
        groups[key].linears.append(linear)
    for group in groups.values():
        _describe(group)
    return list(groups.values())


def _describe(group: LinearGroup) -> None:
    """Fill the group's producer and channel map, or the reasons it has none."""
    channels = {lin.k for lin in group.linears}
    if len(channels) != 1:
        group.problems.append("linears disagree on the number of input channels")
        return
    k = channels.pop()
    for linear in group.linears:
        others = [u.node.name for u in linear.weight.uses() if u.node is not linear.node]
        if others:
            group.problems.append(f"weight {linear.weight.name!r} of {linear.name} is shared with node {others[0]!r}")
    members = {lin.node for lin in group.linears}
    outsiders = [u.node for u in group.input.uses() if u.node not in members]
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
    mapping = channel_map(linear.output, linear.n, path)
    if mapping is None or mapping.shape != (k,):
        group.reason = f"cannot map channels from {linear.name} through {'/'.join(n.op_type for n in path)}"
        return
    for const in (linear.weight, linear.bias):
        owners = {linear.node, linear.output.producer()}
        if const is not None and any(u.node not in owners for u in const.uses()):
            group.reason = f"producer constant {const.name!r} of {linear.name} is shared with another node"
            return
    group.producer, group.channel_map = LinearProducer(linear, path), mapping


def row_gather_tables(model: ir.Model) -> dict[tuple, list[tuple[ir.Node, np.ndarray]]]:
    """Row Gathers (axis 0) of constant 2-D float32 tables, by table shape: {(V, H): [(gather, table)]}."""
    tables: dict[tuple, list] = {}
    for node in model.graph:
        if (
            node.op_type != "Gather"
            or node.domain != ""
            or (node.attributes.get("axis") and node.attributes["axis"].as_int())
        ):
            continue
        table = constant_array(node.inputs[0])
        if table is not None and table.ndim == 2 and table.dtype == np.float32:
            tables.setdefault(tuple(table.shape), []).append((node, table))
    return tables


def tied_table(weight_kn: np.ndarray, tables: dict) -> str | None:
    """The name of a gathered table equal to the weight's transpose (a tied embedding / LM head), or None."""
    for gather, table in tables.get((weight_kn.shape[1], weight_kn.shape[0]), []):
        if np.array_equal(weight_kn.T, table):
            return gather.inputs[0].name
    return None
