"""What is in a model: opset, operators, parameters and bytes per layer, precision, external data."""

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.ir.flops import weight_macs
from onnxcomp.ir.graph import constant_array
from onnxcomp.ir.modelio import external_location, external_tensors, load_proto


def _weight_precision(value: ir.Value) -> tuple[str, ir.Value]:
    """(precision description, the stored initializer) of a node input."""
    producer = value.producer()
    if producer is not None and producer.op_type == "DequantizeLinear" and producer.inputs[0].const_value is not None:
        stored = producer.inputs[0]
        scale = producer.inputs[1].const_value
        axis = producer.attributes.get("axis")
        granularity = (
            "per-tensor" if scale is None or scale.size == 1 else f"per-channel axis {axis.as_int() if axis else 1}"
        )
        return f"{stored.dtype.name.lower()} {granularity}", stored
    return (value.dtype.name.lower() if value.dtype else "?"), value


def inspect(path) -> dict:
    proto = load_proto(path)  # checked, external data safe and inline
    stub = onnx.load(str(path), load_external_data=False)  # where the data lives (loading moved it inline)
    external = sorted({external_location(t)["location"] for t in external_tensors(stub)})
    model = ir.from_proto(proto)
    graph = model.graph
    quantized_activations = [
        n.inputs[0].name for n in graph if n.op_type == "QuantizeLinear" and constant_array(n.inputs[0]) is None
    ]
    layers = []
    for node in graph:
        if node.op_type in ("DequantizeLinear", "QuantizeLinear", "Constant"):
            continue
        weights = []
        for value in node.inputs:
            if value is None:
                continue
            precision, stored = _weight_precision(value)
            if stored.const_value is None or precision in ("int64", "int32"):  # shapes, indices
                continue
            weights.append(
                {
                    "name": stored.name,
                    "shape": list(stored.const_value.shape),
                    "precision": precision,
                    "params": int(np.prod(stored.const_value.shape)),
                    "bytes": int(stored.const_value.nbytes),
                }
            )
        if weights and sum(w["params"] for w in weights) > 1:
            activation = "float"
            first = node.inputs[0]
            if (
                first is not None
                and first.producer() is not None
                and first.producer().op_type == "DequantizeLinear"
                and first.producer().inputs[0].const_value is None
            ):
                zp = first.producer().inputs[2] if len(first.producer().inputs) > 2 else None
                activation = zp.dtype.name.lower() if zp is not None and zp.dtype else "int8"
            layers.append(
                {
                    "node": node.name,
                    "op": node.op_type,
                    "activation": activation,
                    "params": sum(w["params"] for w in weights),
                    "bytes": sum(w["bytes"] for w in weights),
                    "weights": weights,
                }
            )
    params = sum(int(np.prod(v.const_value.shape)) for v in graph.initializers.values() if v.const_value is not None)
    return {
        "path": str(path),
        "file_bytes": Path(path).stat().st_size + sum((Path(path).parent / loc).stat().st_size for loc in external),
        "onnx_file_bytes": Path(path).stat().st_size,
        "ir_version": proto.ir_version,
        "opsets": {(e.domain or "ai.onnx"): e.version for e in proto.opset_import},
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "inputs": [
            {"name": v.name, "dtype": v.dtype.name.lower() if v.dtype else "?", "shape": str(v.shape)}
            for v in graph.inputs
        ],
        "outputs": [
            {"name": v.name, "dtype": v.dtype.name.lower() if v.dtype else "?", "shape": str(v.shape)}
            for v in graph.outputs
        ],
        "nodes": sum(1 for _ in graph),
        "operators": dict(Counter(n.op_type for n in graph).most_common()),
        "parameters": params,
        "weight_macs": weight_macs(model),
        "initializer_bytes": sum(
            v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None
        ),
        "quantized_activations": len(quantized_activations),
        "external_data": external,
        "layers": layers,
    }
