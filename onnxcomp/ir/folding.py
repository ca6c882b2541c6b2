"""Fold per-input-channel scales into a linear group and its producer (used by SmoothQuant and AWQ).

A group of linears reading X computes the same function after X → X/s, W → diag(s)·W. 1/s goes
into the producer found by `onnxcomp.ir.patterns`: a norm's gamma (and beta), or a
producer linear's output columns (and bias), chosen per *producer* channel t and expanded to the
group's input channels by the group's channel map (s = t[channel_map]). Without a producer an
explicit `Mul(X, 1/s)` can be inserted in front of the linears.
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.graph import NameAllocator, add_initializer
from onnxcomp.ir.linears import scale_along
from onnxcomp.ir.patterns import LinearGroup, LinearProducer, NormProducer

FALLBACKS = ("skip", "mul")  # a group without a producer: left alone, or an inserted Mul(X, 1/s)


def group_weights(group: LinearGroup) -> np.ndarray:
    """The group's weights side by side, [K, ΣN]."""
    return np.concatenate([lin.weight_kn() for lin in group.linears], axis=1)


def producer_channels(group: LinearGroup) -> tuple[np.ndarray, int]:
    """(channel map from the group's K input channels to producer channels, producer width)."""
    k = group.linears[0].k
    if isinstance(group.producer, LinearProducer):
        return group.channel_map, group.producer.linear.n
    return np.arange(k), k


def fold_scales(graph: ir.Graph, names: NameAllocator, group: LinearGroup, t: np.ndarray) -> str:
    """Scale the group's weight rows by s = t[channel_map] and its input by 1/s (folded into the
    producer, or an inserted Mul when it has none). Returns what absorbed 1/s."""
    channel_map, _ = producer_channels(group)
    s = t[channel_map]
    for lin in group.linears:
        scale_along(lin.weight, s, lin.in_axis)
    producer = group.producer
    if isinstance(producer, NormProducer):
        scale_along(producer.scale, 1.0 / s, -1)
        if producer.bias is not None:
            scale_along(producer.bias, 1.0 / s, -1)
        return producer.description
    if isinstance(producer, LinearProducer):
        scale_along(producer.linear.weight, 1.0 / t, producer.linear.out_axis)
        if producer.linear.bias is not None:
            scale_along(producer.linear.bias, 1.0 / t, 0)
        return producer.description
    _insert_mul(graph, names, group, (1.0 / s).astype(np.float32))
    return "inserted Mul"


def _insert_mul(graph: ir.Graph, names: NameAllocator, group: LinearGroup, inverse: np.ndarray) -> None:
    base = group.input.name
    factor = add_initializer(graph, names.new(f"{base}_smooth_scale"), inverse)
    mul = ir.node("Mul", [group.input, factor], name=names.new(f"{base}_scale_Mul"))
    mul.outputs[0].name = names.new(f"{base}_scaled")
    mul.outputs[0].dtype = group.input.dtype
    mul.outputs[0].shape = group.input.shape
    for lin in group.linears:
        lin.node.replace_input_with(0, mul.outputs[0])
    graph.append(mul)
