"""Initializers that are also graph inputs (IR >= 4, older exports): by default they stay
overridable inputs (a fed value is honoured; passes leave them in float and the report lists
them); `inline_input_initializers` / `--inline-input-initializers` / a recipe's key treats them as
constants. Either way the output is never larger than the input with the quantization ignored."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper
from onnx import helper as h

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import INPUT_INITIALIZER, input_specs
from onnxcomp.runtime import synthetic_feed

WEIGHTS = ("W1", "W2", "W3")


def mlp(declare_inputs: bool = True) -> onnx.ModelProto:
    """x[batch, 128] → MatMul W1[128, 256] → Relu → MatMul W2[256, 128] → Relu → Gemm W3ᵀ[64, 128] → y,
    IR 8 as older exporters wrote it, every weight (not the biases) also declared as a graph input."""
    rng = np.random.default_rng(0)
    w = {
        "W1": rng.standard_normal((128, 256)).astype(np.float32) / 11,
        "W2": rng.standard_normal((256, 128)).astype(np.float32) / 16,
        "W3": rng.standard_normal((64, 128)).astype(np.float32) / 11,
    }
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b3")]
    inputs = [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128])]
    if declare_inputs:
        inputs += [h.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in w.items()]
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1"),
            h.make_node("Relu", ["h1"], ["r1"], name="relu1"),
            h.make_node("MatMul", ["r1", "W2"], ["h2"], name="fc2"),
            h.make_node("Relu", ["h2"], ["r2"], name="relu2"),
            h.make_node("Gemm", ["r2", "W3", "b3"], ["y"], name="fc3", transB=1),
        ],
        "mlp",
        inputs,
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def feeds(count: int = 4) -> list[dict]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((8, 128)).astype(np.float32)} for _ in range(count)]


def run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def size(model: onnx.ModelProto) -> int:
    return model.ByteSize()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("recipe", ["int8", "w4a16-rtn"])
def test_default_honours_the_inputs(recipe):
    model = mlp()
    result = onnxcomp.compress(model, recipe, feeds() if recipe == "int8" else None, use_cache=False)
    out = result.model
    # the weights are still overridable inputs, in float, with their defaults
    assert [i.name for i in out.graph.input] == ["x", *WEIGHTS]
    stored = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    for t in model.graph.initializer:
        if t.name in WEIGHTS:
            np.testing.assert_array_equal(stored[t.name], numpy_helper.to_array(t))
    assert size(out) <= size(model) * 1.02  # not quantized, and not kept twice
    overridable = result.report["input_initializers"]
    assert overridable == {"names": list(WEIGHTS), "treated_as": "inputs", "reason": INPUT_INITIALIZER}
    if recipe == "w4a16-rtn":
        details = next(e for e in result.report["passes"] if e["pass"] == "quantize_weight_only")["details"]
        reasons = {s["node"]: s["reason"] for s in details["skipped"]}
        assert reasons == dict.fromkeys(["fc1", "fc2", "fc3"], INPUT_INITIALIZER)
    # a fed weight is honoured: the output follows it as the original does
    feed = feeds(1)[0]
    fed = {**feed, "W2": np.random.default_rng(2).standard_normal((256, 128)).astype(np.float32) / 16}
    expected, expected_fed = run(model, feed), run(model, fed)
    assert cosine(expected, expected_fed) < 0.9  # feeding W2 changes the result: the check below can fail
    tolerance = 0.999 if recipe == "int8" else 0.999999
    assert cosine(run(out, fed), expected_fed) > tolerance
    assert cosine(run(out, feed), expected) > tolerance


@pytest.mark.parametrize(("recipe", "ratio"), [("int8", 0.3), ("w4a16-rtn", 0.2)])
def test_inline_compresses_them_as_constants(recipe, ratio):
    model = mlp()
    result = onnxcomp.compress(
        model, recipe, feeds() if recipe == "int8" else None, use_cache=False, inline_input_initializers=True
    )
    out = result.model
    assert [i.name for i in out.graph.input] == ["x"]
    assert size(out) < size(model) * ratio
    assert result.report["input_initializers"]["treated_as"] == "constants"
    plain = onnxcomp.compress(mlp(declare_inputs=False), recipe, feeds() if recipe == "int8" else None, use_cache=False)
    assert onnx.printer.to_text(out.graph) == onnx.printer.to_text(plain.model.graph)
    feed = feeds(1)[0]
    assert cosine(run(out, feed), run(model, feed)) > 0.99


def test_cli_notes_and_flag(tmp_path):
    src = tmp_path / "mlp.onnx"
    onnx.save(mlp(), src)
    runner = CliRunner()
    result = runner.invoke(cli, ["compress", str(src), "-o", str(tmp_path / "a.onnx"), "--recipe", "w4a16-rtn"])
    assert result.exit_code == 0, result.output
    assert "3 initializers are also graph inputs" in result.output
    assert (tmp_path / "a.onnx").stat().st_size <= src.stat().st_size * 1.02
    out = tmp_path / "b.onnx"
    result = runner.invoke(
        cli, ["compress", str(src), "-o", str(out), "--recipe", "w4a16-rtn", "--inline-input-initializers"]
    )
    assert result.exit_code == 0, result.output
    assert "graph inputs" not in result.output
    assert out.stat().st_size < src.stat().st_size * 0.2
    # the recipe file's key does the same
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "w4a16-rtn"\ninline_input_initializers = true\n')
    result = runner.invoke(cli, ["compress", str(src), "-o", str(tmp_path / "c.onnx"), "--recipe", str(recipe)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.onnx").read_bytes() == out.read_bytes()


def test_bad_values_are_one_line(tmp_path):
    with pytest.raises(OnnxcompError, match="inline_input_initializers must be True or False"):
        onnxcomp.compress(mlp(), "w4a16-rtn", inline_input_initializers="yes")
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "w4a16-rtn"\ninline_input_initializers = "yes"\n')
    with pytest.raises(OnnxcompError, match="'inline_input_initializers' must be true or false"):
        onnxcomp.compress(mlp(), recipe)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "recipe"), [("digits", "int8"), ("minilm", "w4a16-rtn")])
def test_zoo_model_with_its_weights_declared_as_inputs(kind, recipe):
    """A zoo model with every weight of a linear layer re-declared as a graph input (as older
    exporters wrote models): honoured by default, and with the opt-in byte-identical to the plain
    model's output."""
    from onnxcomp import models

    module, path = models.get(kind), models.onnx_path(kind)
    plain = onnx.load(str(path))
    model = onnx.load(str(path))
    linear_weights = {n.input[1] for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")}
    weights = [t for t in model.graph.initializer if t.name in linear_weights and len(t.dims) >= 2]
    assert len(weights) >= (36 if kind == "minilm" else 3)
    model.graph.input.extend(h.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights)
    calibration = module.calibration_feeds() if recipe == "int8" else None

    honoured = onnxcomp.compress(model, recipe, calibration, use_cache=False)
    assert len(honoured.report["input_initializers"]["names"]) == len(weights)
    assert size(honoured.model) <= size(model) * 1.02
    feed = synthetic_feed(input_specs(plain), batch=2, sequence=16)  # MiniLM: token ids of 1
    fed = {**feed, weights[-1].name: np.zeros(list(weights[-1].dims), np.float32)}
    expected_fed = run(model, fed)
    assert cosine(run(model, feed), expected_fed) < 0.999  # the fed weight matters
    assert cosine(run(honoured.model, fed), expected_fed) > 0.99

    inlined = onnxcomp.compress(model, recipe, calibration, use_cache=False, inline_input_initializers=True)
    reference = onnxcomp.compress(plain, recipe, calibration, use_cache=False)
    assert size(inlined.model) < size(plain) * 0.35
    assert inlined.model.SerializeToString(deterministic=True) == reference.model.SerializeToString(deterministic=True)
