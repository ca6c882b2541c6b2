"""A synthetic stack of large MatMul/Gemm layers saved with external data, for the large-model path.

x[batch, D] → (MatMul W_i[D, D] → Relu → Gemm G_i[D, D]ᵀ + b_i → Relu) x layers → y. Weights are
generated layer by layer and written straight into the external-data file, so building a 2.5 GB
model never holds more than one weight in memory.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto
from onnx import helper as h


def build(path: str | Path, dim: int, layers: int, seed: int = 0) -> int:
    """Write the model to `path` (+ `<name>.data`); returns the weight bytes."""
    path = Path(path)
    data_name = f"{path.name}.data"
    rng = np.random.default_rng(seed)
    nodes, inits, offset = [], [], 0
    scale = np.float32(1 / np.sqrt(dim))
    with open(path.parent / data_name, "wb") as fh:

        def external(name: str, array: np.ndarray) -> None:
            nonlocal offset
            raw = np.ascontiguousarray(array).tobytes()
            fh.write(raw)
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(array.shape))
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            inits.append(t)
            offset += len(raw)

        current = "x"
        for i in range(layers):
            external(f"W{i}", rng.standard_normal((dim, dim), dtype=np.float32) * scale)
            external(f"G{i}", rng.standard_normal((dim, dim), dtype=np.float32) * scale)
            external(f"b{i}", rng.standard_normal(dim, dtype=np.float32) * np.float32(0.1))
            nodes += [
                h.make_node("MatMul", [current, f"W{i}"], [f"m{i}"], name=f"matmul{i}"),
                h.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"),
                h.make_node("Gemm", [f"r{i}", f"G{i}", f"b{i}"], [f"g{i}"], name=f"gemm{i}", transB=1),
                h.make_node("Relu", [f"g{i}"], [f"y{i}"], name=f"relu_out{i}"),
            ]
            current = f"y{i}"
        nodes[-1].output[0] = "y"
    graph = h.make_graph(
        nodes,
        "large_stack",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dim])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    path.write_bytes(model.SerializeToString())
    return offset


def feeds(dim: int, count: int = 2, batch: int = 4, seed: int = 1) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((batch, dim), dtype=np.float32)} for _ in range(count)]


def check(model_path: str | Path) -> onnx.ModelProto:
    """The model as written, external data not loaded (the checker reads it from the path)."""
    onnx.checker.check_model(str(model_path))
    return onnx.load(str(model_path), load_external_data=False)
