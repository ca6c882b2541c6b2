"""Per-op channel rules: how the channels (last axis) of a tensor travel through one operator.

Each rule, registered for its op types, answers two questions about a node on a path between a
linear layer and a later reader:
- `carriers(node, out)`: which inputs carry the output's channels unmixed (walking upwards);
- `forward(node, ids, out_shape)`: given channel ids laid out in the input's shape, the ids in the
  output's shape (walking downwards). Ids are floats so that a broadcast copies them exactly.

Rules today (what scale folding follows; pruning's dependency groups will add Concat/Split):
Reshape/Unsqueeze/Squeeze/Identity (a reshape of the ids: head splits and merges), Transpose
(its perm), Expand (a broadcast: grouped-query repeats of K/V heads), MatMul(P, V) with both
operands computed (the value operand: positions mix, channels do not), and Mul of two computed
tensors (the gated product of an MLP: either operand of the output's shape). An op without a rule
stops the walk. Like onnxscript's per-op evaluators and Torch-Pruning's index mappings, adding an
op is registering a rule, not a branch.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.graph import constant_array


@dataclass(frozen=True)
class ChannelRule:
    carriers: Callable[[ir.Node, ir.Value], list[ir.Value]]
    forward: Callable[[ir.Node, np.ndarray, tuple], np.ndarray]


def _first_input(node: ir.Node, out: ir.Value) -> list[ir.Value]:
    return [node.inputs[0]]


def _value_operand(node: ir.Node, out: ir.Value) -> list[ir.Value]:
    """probabilities · V: the sequence axis mixes, channels do not (a constant B is a linear)."""
    return [node.inputs[1]] if constant_array(node.inputs[1]) is None else []


def _gated_operands(node: ir.Node, out: ir.Value) -> list[ir.Value]:
    """Either computed operand of the output's shape (the gated product of an MLP)."""
    if any(constant_array(v) is not None for v in node.inputs):
        return []
    return [v for v in node.inputs if v.shape is not None and v.shape == out.shape]


def _reshape(node: ir.Node, ids: np.ndarray, out_shape: tuple) -> np.ndarray:
    return ids.reshape(out_shape)


def _transpose(node: ir.Node, ids: np.ndarray, out_shape: tuple) -> np.ndarray:
    perm = node.attributes.get("perm")
    return np.transpose(ids, perm.as_ints() if perm is not None else None)


def _broadcast(node: ir.Node, ids: np.ndarray, out_shape: tuple) -> np.ndarray:
    """Expand, and MatMul(P, V) or Mul with dynamic dims set to 1: the ids are copied."""
    return np.broadcast_to(ids, out_shape)


RULES: dict[str, ChannelRule] = {}


def register(rule: ChannelRule, *op_types: str) -> None:
    """Use `rule` for these default-domain op types."""
    for op_type in op_types:
        RULES[op_type] = rule


register(ChannelRule(_first_input, _reshape), "Reshape", "Unsqueeze", "Squeeze", "Identity")
register(ChannelRule(_first_input, _transpose), "Transpose")
register(ChannelRule(_first_input, _broadcast), "Expand")
register(ChannelRule(_value_operand, _broadcast), "MatMul")
register(ChannelRule(_gated_operands, _broadcast), "Mul")


def rule_for(node: ir.Node) -> ChannelRule | None:
    return RULES.get(node.op_type) if node.domain == "" else None


def concrete_shape(value: ir.Value) -> tuple[int, ...] | None:
    """The value's shape with symbolic dims (batch, sequence) set to 1; None when unknown."""
    if value.shape is None:
        return None
    return tuple(dim if isinstance(dim, int) else 1 for dim in value.shape)


def channel_map(source: ir.Value, channels: int, path: list[ir.Node]) -> np.ndarray | None:
    """For each channel (last axis) at the end of `path`, the channel of `source` it copies.

    Channel ids are pushed through the path's rules in numpy, with dynamic dims set to 1, so the
    map follows reshapes into heads, transposes and grouped-query expands exactly. None when a
    shape is unknown, an op has no rule, or the output channels are not copies of one channel each.
    """
    shape = concrete_shape(source)
    if shape is None or shape[-1] != channels:
        return None
    ids = np.broadcast_to(np.arange(channels, dtype=np.float64), shape)
    try:
        for node in path:
            out_shape = concrete_shape(node.outputs[0])
            rule = rule_for(node)
            if out_shape is None or rule is None:
                return None
            ids = rule.forward(node, ids, out_shape)
            if ids.shape != out_shape:
                return None
    except ValueError:
        return None
    rows = ids.reshape(-1, ids.shape[-1])
    if not (rows == rows[:1]).all():
        return None
    return rows[0].astype(np.int64)
