"""Shared fixtures: tiny graphs built with onnx.helper, ORT runners, and real models from `models/`.

Real models are built (trained / exported) at first use into `$ONNXCOMP_CACHE`; when that variable
is unset, the tests use a `.cache` folder at the repository root (never the user's home cache).
"""

import os
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ONNXCOMP_CACHE", str(REPO / ".cache"))
# The speed guard's decisions come from timing this machine: tests of other passes check structure
# and must not depend on it. tests/passes/test_guard_speed.py turns it on where it is tested.
os.environ.setdefault("ONNXCOMP_SPEED_GUARD", "0")

# onnx's helper stamps the newest IR version it knows, which the installed onnxruntime may not
# accept yet; opset 21 needs IR version 10.
IR_VERSION = 10
OPSET = 21


# -- tiny graphs ---------------------------------------------------------------------------
def make_model(
    nodes, inputs, outputs, initializers=None, opset=OPSET, name="tiny", infer_shapes=False
) -> onnx.ModelProto:
    """A checked ModelProto. inputs/outputs: [(name, shape)] (float32) or ValueInfoProtos.

    infer_shapes: add value_info for intermediate tensors (as exporters do).
    """

    def info(entry, elem=TensorProto.FLOAT):
        if isinstance(entry, onnx.ValueInfoProto):
            return entry
        return helper.make_tensor_value_info(entry[0], elem, entry[1])

    graph = helper.make_graph(
        nodes,
        name,
        [info(i) for i in inputs],
        [info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    if infer_shapes:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return model


def ort_session(model, optimize: bool = False, optimized_path: str | None = None):
    """A CPU session; optimize=False keeps ORT from fusing (so a test sees the graph as written)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run(model, feed: dict, optimize: bool = False) -> list[np.ndarray]:
    return ort_session(model, optimize).run(None, feed)


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def producer(model: onnx.ModelProto, tensor: str):
    for node in model.graph.node:
        if tensor in node.output:
            return node
    return None


def consumers(model: onnx.ModelProto, tensor: str):
    return [n for n in model.graph.node if tensor in n.input]


def node_named(model: onnx.ModelProto, name: str):
    (node,) = [n for n in model.graph.node if n.name == name]
    return node


def dq_params(model: onnx.ModelProto, tensor: str) -> dict:
    """The DequantizeLinear producing `tensor`: its quantized array (if constant), scale, zero point, axis."""
    node = producer(model, tensor)
    assert node is not None and node.op_type == "DequantizeLinear", f"{tensor!r} is not produced by DequantizeLinear"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    names = {i.name for i in model.graph.initializer}
    out = {
        "node": node,
        "input": node.input[0],
        "scale": initializer(model, node.input[1]),
        "zero_point": initializer(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None,
        "axis": attrs.get("axis", 1),
        "q": initializer(model, node.input[0]) if node.input[0] in names else None,
    }
    return out


def signed_codes(dq: dict) -> np.ndarray:
    """A weight DequantizeLinear's int8 codes (`dq_params`): int8 with zero point 0, or (ort-cpu)
    the same codes stored as uint8 + 128 with zero point 128."""
    q, zero_point = dq["q"], dq["zero_point"]
    if q.dtype == np.uint8:
        assert zero_point is not None and zero_point.dtype == np.uint8 and np.all(zero_point == 128)
        return (q.astype(np.int16) - 128).astype(np.int8)
    assert q.dtype == np.int8 and (zero_point is None or (zero_point.dtype == np.int8 and not zero_point.any()))
    return q


def weight_scales(model: onnx.ModelProto) -> list[np.ndarray]:
    """The scales of every MatMulNBits, MatMulInt4 and blocked DequantizeLinear weight."""
    scale_input = {"MatMulNBits": 2, "MatMulInt4": 2, "DequantizeLinear": 1}
    return [initializer(model, n.input[scale_input[n.op_type]]) for n in model.graph.node if n.op_type in scale_input]


def attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


@pytest.fixture
def tiny():
    """Builders and inspectors for tiny ONNX graphs (see the functions above)."""
    return types.SimpleNamespace(
        make_model=make_model,
        run=run,
        session=ort_session,
        op_types=op_types,
        initializer=initializer,
        producer=producer,
        consumers=consumers,
        node_named=node_named,
        dq_params=dq_params,
        signed_codes=signed_codes,
        attr=attr,
        weight_scales=weight_scales,
        helper=helper,
        TensorProto=TensorProto,
        numpy_helper=numpy_helper,
    )


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """An empty, private ONNXCOMP_CACHE for tests that check caching."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ONNXCOMP_CACHE", str(path))
    return path


# -- real models (built at first use into $ONNXCOMP_CACHE) -------------------------------------
@pytest.fixture(scope="session")
def digits():
    from onnxcomp import models

    return models.get("digits")


@pytest.fixture(scope="session")
def digits_path(digits):
    from onnxcomp import models

    return models.onnx_path("digits")


@pytest.fixture(scope="session")
def digits_raw_path(digits, tmp_path_factory):
    """The digits CNN exported *without* the exporter's optimizer: BatchNormalization, Identity,
    shape arithmetic and Constant nodes are still there for the canonicalization passes."""
    import warnings

    import torch

    net, inputs, dynamic_axes = digits.load_for_export()
    path = tmp_path_factory.mktemp("digits_raw") / "digits_raw.onnx"
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (),
            str(path),
            kwargs=inputs,
            dynamo=True,
            opset_version=OPSET,
            input_names=list(inputs),
            dynamic_shapes={name: {0: batch} for name in inputs},
            external_data=False,
            optimize=False,
            verbose=False,
        )
    return path


@pytest.fixture(scope="session")
def digits_int8(digits, digits_path):
    """The digits CNN through the int8 preset (shared by several read-only tests)."""
    import onnxcomp

    return onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds())


SMOLLM2_CALIBRATION_WINDOWS = 8  # 4 feeds of 2 windows of 256 tokens
SMOLLM2_EVALUATION_WINDOWS = 6  # the first 6 of the 40 evaluation windows


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M for the slow tests, with fp32 measured once: `module`, `path`, `calibration`,
    `evaluation` (the first windows of the evaluation text), `reference` (fp32 perplexity there),
    `compress(preset, options)` (once per arguments in a session: the GPTQ and AWQ tests share the
    symmetric RTN model) and `ratio(model)`: a model's perplexity over fp32's on the evaluation windows."""
    import json

    import onnxcomp
    from onnxcomp import models
    from onnxcomp.runtime import ort_session, runner

    module, path = models.get("smollm2"), models.onnx_path("smollm2")
    calibration = module.calibration_feeds(SMOLLM2_CALIBRATION_WINDOWS)
    evaluation = module.evaluation_feeds()[:SMOLLM2_EVALUATION_WINDOWS]
    reference = module.perplexity(runner(ort_session(path)), evaluation)
    compressed = {}

    def compress(preset, options=None):
        key = (preset, json.dumps(options, sort_keys=True))
        if key not in compressed:
            compressed[key] = onnxcomp.compress(path, preset, calibration, options=options)
        return compressed[key]

    def ratio(model):
        return module.perplexity(runner(ort_session(model)), evaluation) / reference

    return types.SimpleNamespace(
        module=module,
        path=path,
        calibration=calibration,
        evaluation=evaluation,
        reference=reference,
        compress=compress,
        ratio=ratio,
    )
