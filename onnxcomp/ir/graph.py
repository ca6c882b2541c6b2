"""Small helpers over onnx_ir graphs: constants, input specs, exclusion filters, fresh names, new initializers."""

import fnmatch
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir

from onnxcomp.errors import OnnxcompError

INPUT_INITIALIZER = "initializer is also a graph input"


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of an initializer or Constant output, else None. An initializer that is also
    a graph input (IR >= 4) is a default a caller may override: not a constant."""
    if value is None:
        return None
    if value.const_value is not None:
        return None if value.is_graph_input() else value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and producer.domain == "":
        attr = producer.attributes.get("value")
        if attr is not None:
            return attr.value.numpy()
    return None


def is_float32_activation(value: ir.Value | None) -> bool:
    """A float32 tensor computed at run time (not a constant)."""
    return value is not None and constant_array(value) is None and value.dtype == ir.DataType.FLOAT


def op_histogram(model: ir.Model) -> Counter:
    return Counter(node.op_type for node in model.graph.all_nodes())


def initializer_bytes(model: ir.Model) -> int:
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def input_initializers(model: ir.Model) -> list[str]:
    """Names of the graph inputs that also have an initializer (overridable defaults, IR >= 4)."""
    return [v.name for v in model.graph.inputs if v.const_value is not None or v.name in model.graph.initializers]


def drop_initializer_inputs(model: ir.Model) -> list[str]:
    """Remove the initializers' names from the graph inputs, so passes treat them as constants."""
    names = input_initializers(model)
    for name in names:
        model.graph.inputs.remove(model.graph.initializers[name])
    return names


class InputSpec:
    """Name, numpy dtype and shape (ints or None for dynamic dims) of a model input."""

    def __init__(self, name: str, dtype: np.dtype, shape: tuple):
        self.name, self.dtype, self.shape = name, np.dtype(dtype), tuple(shape)


def input_specs(proto: onnx.ModelProto) -> list[InputSpec]:
    """Graph inputs that are not initializers, with numpy dtypes and static dims (None = dynamic)."""
    inits = {i.name for i in proto.graph.initializer}
    specs = []
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        tensor_type = inp.type.tensor_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim)
        specs.append(InputSpec(inp.name, dtype, dims))
    return specs


class NodeFilter:
    """Exclusion patterns: an exact op type (`Softmax`) or a glob on node names (`*attention*`)."""

    def __init__(self, patterns: list[str] | tuple[str, ...] = ()):
        self.patterns = list(patterns)

    def excludes(self, node: ir.Node) -> bool:
        return any(node.op_type == p or fnmatch.fnmatchcase(node.name or "", p) for p in self.patterns)

    def check_all_match(self, model: ir.Model) -> None:
        """Raise when a pattern matches no node: a typo must not silently quantize everything."""
        nodes = list(model.graph.all_nodes())
        for pattern in self.patterns:
            if not any(n.op_type == pattern or fnmatch.fnmatchcase(n.name or "", pattern) for n in nodes):
                raise OnnxcompError(f"--exclude {pattern!r}: no node has this name or op type")


class NameAllocator:
    """Hands out value names not yet used anywhere in a graph (outputs, inputs, initializers)."""

    def __init__(self, graph: ir.Graph):
        self.used = set(graph.initializers) | {v.name for v in graph.inputs}
        self.used |= {v.name for node in graph.all_nodes() for v in node.outputs}

    def new(self, base: str) -> str:
        name, suffix = base, 1
        while name in self.used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.used.add(name)
        return name


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register `array` as a new initializer named `name` (which must be unused: see NameAllocator)."""
    tensor = ir.tensor(np.asarray(array), name=name)
    value = ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value
