"""Writing int8 QDQ: a QuantizeLinear→DequantizeLinear pair on an activation, and a constant stored
as integers behind a DequantizeLinear (per-channel weights, int32 biases).

Names follow the tensor they stand for (`<x>_scale`, `<x>_zero_point`, `<x>_quantized`,
`<x>_dequantized`, nodes `<x>_QuantizeLinear`/`<x>_DequantizeLinear`), so a model reads the same
in any viewer and identical inputs give identical bytes. The caller adds the returned nodes to
the graph (and sorts it).
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.graph import NameAllocator, add_initializer


def qdq_pair(
    graph: ir.Graph, names: NameAllocator, value: ir.Value, scale: np.floating, zero_point: np.integer
) -> list[ir.Node]:
    """[QuantizeLinear, DequantizeLinear] of a float activation with per-tensor parameters; the
    DequantizeLinear output is what quantized readers take instead of `value`."""
    scale_v = add_initializer(graph, names.new(f"{value.name}_scale"), np.array(scale, dtype=np.float32))
    zp_v = add_initializer(graph, names.new(f"{value.name}_zero_point"), np.array(zero_point))
    q = ir.node("QuantizeLinear", [value, scale_v, zp_v], name=f"{value.name}_QuantizeLinear")
    q.outputs[0].name = names.new(f"{value.name}_quantized")
    dq = ir.node("DequantizeLinear", [q.outputs[0], scale_v, zp_v], name=f"{value.name}_DequantizeLinear")
    dq.outputs[0].name = names.new(f"{value.name}_dequantized")
    return [q, dq]


def dynamic_qdq_pair(graph: ir.Graph, names: NameAllocator, value: ir.Value) -> list[ir.Node]:
    """[DynamicQuantizeLinear, DequantizeLinear] of a float activation: uint8 with the scale and zero
    point of each tensor's own min/max, computed at run time (ONNX Runtime fuses the pair with a
    following MatMul on a DequantizeLinear weight into DynamicQuantizeMatMul)."""
    dynamic = ir.node("DynamicQuantizeLinear", [value], num_outputs=3, name=f"{value.name}_DynamicQuantizeLinear")
    for output, suffix in zip(dynamic.outputs, ("quantized", "scale", "zero_point")):
        output.name = names.new(f"{value.name}_dynamic_{suffix}")
    dq = ir.node("DequantizeLinear", list(dynamic.outputs), name=f"{value.name}_dynamic_DequantizeLinear")
    dq.outputs[0].name = names.new(f"{value.name}_dynamic_dequantized")
    return [dynamic, dq]


def dequantized_constant(
    graph: ir.Graph,
    names: NameAllocator,
    base: str,
    codes: np.ndarray,
    scales: np.ndarray,
    zero_points: np.ndarray | None,
    axis: int,
) -> ir.Node:
    """DequantizeLinear(codes, scales[, zero_points], axis) over new initializers named after `base`."""
    inputs = [
        add_initializer(graph, names.new(f"{base}_quantized"), codes),
        add_initializer(graph, names.new(f"{base}_scale"), scales),
    ]
    if zero_points is not None:
        inputs.append(add_initializer(graph, names.new(f"{base}_zero_point"), zero_points))
    dq = ir.node("DequantizeLinear", inputs, {"axis": axis}, name=f"{base}_DequantizeLinear")
    dq.outputs[0].name = names.new(f"{base}_dequantized")
    return dq
