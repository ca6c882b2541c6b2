"""Multiply-accumulates of the layers with constant weights: a cheap FLOPs count for reports.

Per sample row: a MatMul/Gemm with weight [K, N] does K·N MACs per row of its input (per token
in a transformer); a Conv does its weight's size times the output's spatial size (per image,
when the spatial dims are static). Weights stored quantized (MatMulNBits, behind
DequantizeLinear) are not counted; attention's activation × activation MatMuls neither.
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.linears import linear_of


def weight_macs(model: ir.Model) -> int:
    """MACs per input row (token) or image of every float MatMul/Gemm/Conv with a constant weight."""
    total = 0
    for node in model.graph:
        linear = linear_of(node)
        if linear is None or linear.array.dtype.kind != "f":
            continue
        size = int(linear.array.size)
        if node.op_type == "Conv":
            shape = node.outputs[0].shape
            spatial = shape[2:] if shape is not None else []
            if not all(isinstance(d, int) for d in spatial):
                continue
            size *= int(np.prod(spatial, dtype=np.int64))
        total += size
    return total
