"""Float versions of quantized layers (the speed guard's fallback): undo QDQ insertion and weight packing.

`quantized_layers(model)` lists the layers a compression pass quantized: a Conv/MatMul/Gemm reading a
DequantizeLinear, or a `com.microsoft.MatMulNBits`. `revert(model, nodes)` rewrites those layers to
float in place: a constant DequantizeLinear input becomes a float initializer holding the dequantized
values (ONNX Runtime computes them, so every layout it reads is covered), a Quantize→Dequantize pair on
the layer's inputs or outputs is bypassed for this layer, and a MatMulNBits becomes a MatMul (plus an
Add for its bias) on its dequantized weight. The layer then computes what the quantized one computed
with float arithmetic: the output changes only by float rounding and activation quantization noise;
the file grows back. Nodes nothing uses any more are removed.
"""

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from onnxcomp.ir.graph import NameAllocator, add_initializer
from onnxcomp.runtime import ort_session

LINEAR_OPS = ("Conv", "MatMul", "Gemm")
MS_DOMAIN = "com.microsoft"


def _producer(value: ir.Value | None, op_type: str) -> ir.Node | None:
    node = value.producer() if value is not None else None
    return node if node is not None and node.domain == "" and node.op_type == op_type else None


def _is_constant(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is not None


def quantized_layers(model: ir.Model) -> list[ir.Node]:
    """The quantized linear layers of `model`, in graph order."""
    return [
        node
        for node in model.graph
        if (
            node.domain == ""
            and node.op_type in LINEAR_OPS
            and any(_producer(v, "DequantizeLinear") for v in node.inputs)
        )
        or (node.domain == MS_DOMAIN and node.op_type == "MatMulNBits")
    ]


def layer_kind(node: ir.Node) -> str:
    """Layers of one kind run the same kernel on the same shapes: the unit the speed guard tries."""
    if node.op_type == "MatMulNBits":
        return f"MatMulNBits {node.attributes['K'].as_int()}x{node.attributes['N'].as_int()}"
    weights = [v for v in node.inputs[1:2] if _producer(v, "DequantizeLinear")]
    shape = weights[0].producer().inputs[0].shape if weights else None
    dims = "x".join(str(d) for d in shape) if shape is not None else "activation"
    return f"{node.op_type} {dims}"


def _evaluate(model: ir.Model, node: ir.Node, inputs: list[ir.Value | np.ndarray | None]) -> np.ndarray:
    """Run `node`'s operator alone in ONNX Runtime on constant `inputs` (values or arrays)."""
    constants = []
    for index, item in enumerate(inputs):
        if item is None:
            constants.append(None)
            continue
        if isinstance(item, ir.Value):  # a copy: serializing renames a tensor, which must not touch the model's
            tensor = ir.tensor(item.const_value.numpy(), dtype=item.const_value.dtype)
        else:
            tensor = ir.tensor(item)
        constants.append(ir.Value(name=f"input_{index}", type=ir.TensorType(tensor.dtype), const_value=tensor))
    alone = ir.Node(node.domain, node.op_type, constants, attributes=list(node.attributes.values()), num_outputs=1)
    alone.outputs[0].name = "output"
    alone.outputs[0].type = node.outputs[0].type
    graph = ir.Graph(
        [],
        [alone.outputs[0]],
        nodes=[alone],
        initializers=[v for v in constants if v is not None],
        opset_imports=dict(model.opset_imports),
    )
    return ort_session(ir.to_proto(ir.Model(graph, ir_version=model.ir_version)), 1).run(None, {})[0]


def _bypass_inputs(model: ir.Model, node: ir.Node, names: NameAllocator) -> None:
    for index, value in enumerate(node.inputs):
        dq = _producer(value, "DequantizeLinear")
        if dq is None:
            continue
        if all(_is_constant(v) or v is None for v in dq.inputs):
            array = _evaluate(model, dq, list(dq.inputs))
            node.replace_input_with(index, add_initializer(model.graph, names.new(f"{value.name}_float"), array))
        elif (quantize := _producer(dq.inputs[0], "QuantizeLinear")) is not None:
            node.replace_input_with(index, quantize.inputs[0])


def _bypass_outputs(node: ir.Node) -> None:
    for output in node.outputs:
        for user, _ in list(output.uses()):
            if user.domain != "" or user.op_type != "QuantizeLinear":
                continue
            for dq, _ in list(user.outputs[0].uses()):
                if dq.domain == "" and dq.op_type == "DequantizeLinear" and not dq.outputs[0].is_graph_output():
                    ir.convenience.replace_all_uses_with(dq.outputs[0], output)


def _unpack_matmulnbits(model: ir.Model, node: ir.Node, names: NameAllocator) -> None:
    k = node.attributes["K"].as_int()
    activation = node.inputs[0]
    dtype = activation.dtype.numpy() if activation.dtype is not None else np.float32
    packed = list(node.inputs[1:5]) + [None] * (4 - len(node.inputs[1:5]))
    weight = _evaluate(model, node, [np.eye(k, dtype=dtype), *packed])  # identity @ W = W, dequantized
    base = node.name or node.outputs[0].name
    new_nodes = [
        ir.node(
            "MatMul", [activation, add_initializer(model.graph, names.new(f"{base}_weight"), weight)], name=node.name
        )
    ]
    bias = node.inputs[5] if len(node.inputs) > 5 else None
    if bias is not None:
        new_nodes.append(ir.node("Add", [new_nodes[0].outputs[0], bias], name=names.new(f"{base}_bias")))
    ir.convenience.replace_nodes_and_values(
        model.graph, node, [node], new_nodes, [node.outputs[0]], [new_nodes[-1].outputs[0]]
    )


def revert(model: ir.Model, nodes: list[ir.Node]) -> None:
    """Rewrite `nodes` (from `quantized_layers`) to float in place; see the module docstring."""
    names = NameAllocator(model.graph)
    for node in nodes:
        if node.op_type == "MatMulNBits":
            _unpack_matmulnbits(model, node, names)
        else:
            _bypass_inputs(model, node, names)
            _bypass_outputs(node)
    RemoveUnusedNodesPass()(model)
