"""A seeded mutation fuzzer for `onnxcomp.compress`: small real graphs with one or two mutations
(node attributes, shapes, dtypes, initializer bytes, edges, op types, opsets, raw file bytes) and
random recipes/options. A case passes when compress succeeds or raises `OnnxcompError`; any other
exception is a finding, and so is a case running longer than `timeout` seconds (a hang).

    .venv/bin/python benchmarks/fuzz.py --cases 10000 --seed 0     # the long run
"""

import copy
import signal
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx import helper as h

import onnxcomp
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes import PASSES

PRESETS = ["canonicalize", "int8", "w4a16-rtn", "w8a16", "w8a8-smoothquant", "w4a16-awq", "w4a16-gptq"]
DTYPES = [
    TensorProto.FLOAT16,
    TensorProto.DOUBLE,
    TensorProto.INT8,
    TensorProto.INT64,
    TensorProto.BOOL,
    TensorProto.UINT8,
    TensorProto.BFLOAT16,
    TensorProto.STRING,
    TensorProto.INT4,
]
OPS = ["Relu", "MatMul", "Gemm", "Add", "Conv", "Gather", "Softmax", "Transpose", "Reshape", "Identity", "Bogus"]
ODD_VALUES = [
    0,
    -1,
    1,
    2,
    3,
    7,
    8,
    64,
    128,
    10**9,
    -(10**9),
    0.5,
    -0.5,
    float("nan"),
    float("inf"),
    "",
    "auto",
    "high",
    "x",
    None,
    True,
    False,
    [],
    ["*"],
    ["Softmax"],
    {"a": 1},
    1e300,
]


def mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
            h.make_node("Add", ["h", "b1"], ["a"], name="add1"),
            h.make_node("Relu", ["a"], ["r"], name="relu"),
            h.make_node("Gemm", ["r", "W2", "b2"], ["y"], name="gemm", transB=1),
        ],
        "mlp",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [
            numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "W1"),
            numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
            numpy_helper.from_array(rng.standard_normal((8, 32)).astype(np.float32), "W2"),
            numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b2"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)


def cnn() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "K", "kb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            h.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["n"], name="bn"),
            h.make_node("Relu", ["n"], ["r"], name="relu"),
            h.make_node("Flatten", ["r"], ["f"], name="flat"),
            h.make_node("MatMul", ["f", "W"], ["y"], name="fc"),
        ],
        "cnn",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [
            numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "K"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "kb"),
            numpy_helper.from_array(np.ones(4, np.float32), "g"),
            numpy_helper.from_array(np.zeros(4, np.float32), "be"),
            numpy_helper.from_array(np.zeros(4, np.float32), "mu"),
            numpy_helper.from_array(np.ones(4, np.float32), "var"),
            numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32), "W"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)


def embedder() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    graph = h.make_graph(
        [
            h.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
            h.make_node("MatMul", ["e", "W"], ["y"], name="mm"),
        ],
        "embedder",
        [h.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 16])],
        [
            numpy_helper.from_array(rng.standard_normal((50, 16)).astype(np.float32), "table"),
            numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)


def feeds_for(name: str, rng) -> list[dict]:
    if name == "mlp":
        return [{"x": rng.standard_normal((2, 32)).astype(np.float32)} for _ in range(3)]
    if name == "cnn":
        return [{"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32)} for _ in range(3)]
    return [{"ids": rng.integers(0, 50, (2, 5)).astype(np.int64)} for _ in range(3)]


BASES = {"mlp": mlp, "cnn": cnn, "embedder": embedder}


# -- mutations of a ModelProto (each returns a short description) -------------------------------
def m_attribute(m, rng):
    nodes = [n for n in m.graph.node if n.attribute] or list(m.graph.node)
    node = nodes[rng.integers(len(nodes))]
    if node.attribute and rng.random() < 0.3:
        del node.attribute[rng.integers(len(node.attribute))]
        return f"removed an attribute of {node.name}"
    name = ["axis", "transA", "transB", "alpha", "pads", "group", "perm", "kernel_shape"][rng.integers(8)]
    value = [int(rng.integers(-5, 50)), float(rng.standard_normal()), [int(v) for v in rng.integers(-2, 5, 4)]][
        rng.integers(3)
    ]
    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[i]
            break
    node.attribute.append(h.make_attribute(name, value))
    return f"{node.name}.{name} = {value}"


def m_shape(m, rng):
    value = list(m.graph.input)[rng.integers(len(m.graph.input))]
    dims = value.type.tensor_type.shape.dim
    choice = rng.integers(4)
    if choice == 0 and dims:
        dims[rng.integers(len(dims))].dim_value = int(rng.integers(0, 70))
    elif choice == 1 and dims:
        del dims[rng.integers(len(dims))]
    elif choice == 2:
        dims.add().dim_param = "extra"
    else:
        value.type.tensor_type.ClearField("shape")
    return f"shape of input {value.name}"


def m_dtype(m, rng):
    targets = list(m.graph.initializer) + list(m.graph.input)
    target = targets[rng.integers(len(targets))]
    dtype = DTYPES[rng.integers(len(DTYPES))]
    if isinstance(target, TensorProto):
        target.data_type = dtype
    else:
        target.type.tensor_type.elem_type = dtype
    return f"dtype of {target.name} → {dtype}"


def m_bytes(m, rng):
    init = m.graph.initializer[rng.integers(len(m.graph.initializer))]
    raw = bytearray(init.raw_data)
    choice = rng.integers(4)
    if choice == 0 and raw:
        del raw[rng.integers(len(raw)) :]
    elif choice == 1 and raw:
        for _ in range(8):
            raw[rng.integers(len(raw))] = int(rng.integers(256))
    elif choice == 2:
        arr = numpy_helper.to_array(init).copy()
        if arr.dtype.kind == "f" and arr.size:
            arr.flat[rng.integers(arr.size)] = [np.nan, np.inf, -np.inf, 1e38][rng.integers(4)]
        raw = bytearray(numpy_helper.from_array(arr, init.name).raw_data)
    else:
        del init.dims[:]
        init.dims.extend([int(v) for v in rng.integers(0, 40, rng.integers(0, 4))])
        return f"dims of {init.name}"
    init.raw_data = bytes(raw)
    return f"bytes of {init.name}"


def m_edge(m, rng):
    node = m.graph.node[rng.integers(len(m.graph.node))]
    names = (
        [i.name for i in m.graph.input]
        + [t.name for t in m.graph.initializer]
        + [o for n in m.graph.node for o in n.output]
    )
    if node.input and rng.random() < 0.7:
        k = rng.integers(len(node.input))
        node.input[k] = [names[rng.integers(len(names))], "", "dangling"][rng.integers(3)]
        return f"{node.name}.input[{k}] rewired"
    node.output[0] = names[rng.integers(len(names))]
    return f"{node.name}.output rewired"


def m_op(m, rng):
    node = m.graph.node[rng.integers(len(m.graph.node))]
    node.op_type = OPS[rng.integers(len(OPS))]
    if rng.random() < 0.2:
        node.domain = ["com.microsoft", "ai.onnxcomp", "com.example"][rng.integers(3)]
    return f"{node.name} → {node.op_type}"


def m_structure(m, rng):
    choice = rng.integers(4)
    if choice == 0:
        del m.graph.node[rng.integers(len(m.graph.node))]
        return "deleted a node"
    if choice == 1:
        m.graph.node.append(copy.deepcopy(m.graph.node[rng.integers(len(m.graph.node))]))
        return "duplicated a node"
    if choice == 2:
        m.opset_import[0].version = int(rng.integers(1, 26))
        return f"opset {m.opset_import[0].version}"
    m.ir_version = int(rng.integers(0, 13))
    return f"ir_version {m.ir_version}"


MUTATIONS = [m_attribute, m_shape, m_dtype, m_bytes, m_edge, m_op, m_structure]


def random_recipe(rng):
    """A preset name, a preset with odd options, or a random list of passes."""
    choice = rng.integers(4)
    preset = PRESETS[rng.integers(len(PRESETS))]
    if choice <= 1:
        return preset, None
    names = sorted(PASSES)
    if choice == 2:
        name = names[rng.integers(len(names))]
        opts = PASSES[name].options
        key = sorted(opts)[rng.integers(len(opts))] if opts else "nonexistent"
        return [(name, {key: ODD_VALUES[rng.integers(len(ODD_VALUES))]})], None
    return [(names[rng.integers(len(names))], {}) for _ in range(rng.integers(0, 5))], None


@dataclass
class Finding:
    case: int
    what: str
    error: str


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


def run_case(case: int, seed: int, workdir: Path, timeout: float = 10.0) -> Finding | None:
    rng = np.random.default_rng([seed, case])
    base = list(BASES)[rng.integers(len(BASES))]
    model = BASES[base]()
    what = [base]
    for _ in range(rng.integers(0, 3)):
        try:
            what.append(MUTATIONS[rng.integers(len(MUTATIONS))](model, rng))
        except Exception:  # a mutation that cannot apply to an already-mutated model: skip it
            what.append("(mutation skipped)")
    recipe, _ = random_recipe(rng)
    what.append(f"recipe {recipe}")
    source = model
    if rng.random() < 0.3:  # through a file, sometimes with its bytes cut or flipped
        data = bytearray(model.SerializeToString())
        if rng.random() < 0.5 and data:
            if rng.random() < 0.5:
                del data[rng.integers(len(data)) :]
            else:
                for _ in range(4):
                    data[rng.integers(len(data))] = int(rng.integers(256))
            what.append("file bytes mutated")
        source = workdir / f"case{case}.onnx"
        source.write_bytes(bytes(data))
    calibration = feeds_for(base, rng) if rng.random() < 0.85 else None
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        onnxcomp.compress(
            source, recipe, calibration, use_cache=False, verify=bool(rng.random() < 0.2) and calibration is not None
        )
    except OnnxcompError:
        pass
    except _Hang:
        return Finding(case, "; ".join(what), f"hang: over {timeout} s")
    except Exception as exc:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        return Finding(
            case, "; ".join(what), f"{type(exc).__name__} at {where}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if isinstance(source, Path):
            source.unlink(missing_ok=True)
    return None


def fuzz(cases: int, seed: int = 0, timeout: float = 10.0) -> list[Finding]:
    with tempfile.TemporaryDirectory() as tmp:
        return [f for i in range(cases) if (f := run_case(i, seed, Path(tmp), timeout)) is not None]
