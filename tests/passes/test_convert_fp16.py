"""convert_fp16: the strongly typed float16 variant (Casts at the inputs/outputs, float16 weights and
QDQ scales), on tiny graphs run in ONNX Runtime CPU, and its refusals."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto
from onnx import helper as h

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.errors import OnnxcompError

RNG = np.random.default_rng(3)


def two_layers(tiny):
    """x → MatMul(w1) → LayerNorm → Relu → MatMul(w2) → y."""
    inits = {
        "w1": RNG.standard_normal((64, 32)).astype(np.float32) * 0.2,
        "w2": RNG.standard_normal((32, 8)).astype(np.float32) * 0.2,
        "gamma": np.ones(32, np.float32),
        "beta": np.zeros(32, np.float32),
    }
    nodes = [
        h.make_node("MatMul", ["x", "w1"], ["m"], name="mm1"),
        h.make_node("LayerNormalization", ["m", "gamma", "beta"], ["n"], axis=-1, name="norm"),
        h.make_node("Relu", ["n"], ["r"], name="relu"),
        h.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    return tiny.make_model(nodes, [("x", [4, 64])], [("y", [4, 8])], inits, infer_shapes=True)


def feeds(n=4):
    return [{"x": RNG.standard_normal((4, 64)).astype(np.float32)} for _ in range(n)]


@pytest.mark.parametrize("recipe", ["int8", "w4a16-rtn"])
def test_tensorrt_fp16_variant_casts_at_the_edges_and_half_scales(tiny, recipe):
    proto, data = two_layers(tiny), feeds()
    plain = onnxcomp.compress(proto, recipe, data, target="tensorrt", use_cache=False)
    half = onnxcomp.compress(proto, recipe, data, target="tensorrt", fp16=True, use_cache=False)
    model = half.model
    assert half.report["conformance"]["conforms"]
    onnx.checker.check_model(model, full_check=True)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    assert [n.op_type for n in model.graph.node if "x" in n.input] == ["Cast"]  # x read only by its Cast
    assert tiny.producer(model, "y").op_type == "Cast"
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert TensorProto.FLOAT not in types.values()  # every float weight and scale is float16
    scales = [n for n, t in types.items() if "scale" in n]
    assert scales and all(types[n] == TensorProto.FLOAT16 for n in scales)
    codes = {i.name: i.data_type for i in plain.model.graph.initializer if i.data_type in (TensorProto.INT8, 22)}
    assert codes and all(types[n] == t for n, t in codes.items())  # int8/int4 codes kept as they were
    x = data[0]
    want, got = tiny.run(plain.model, x)[0], tiny.run(model, x)[0]
    assert got.dtype == np.float32
    assert np.linalg.norm(got - want) <= 0.01 * np.linalg.norm(want)  # float16 rounding only


def test_keep_float_op_types_stay_float32(tiny):
    proto = two_layers(tiny)
    result = onnxcomp.compress(
        proto,
        "w4a16-rtn",
        target="tensorrt",
        fp16=True,
        options={"convert_fp16": {"keep_float": ["LayerNormalization"]}},
    )
    gamma = next(i for i in result.model.graph.initializer if i.name.startswith("gamma"))
    assert gamma.data_type == TensorProto.FLOAT


def test_refused_for_ort_cpu_before_any_work(tiny, tmp_path):
    out = tmp_path / "o.onnx"
    with pytest.raises(OnnxcompError, match="target 'ort-cpu' does not compute in float16"):
        onnxcomp.compress(two_layers(tiny), "w4a16-rtn", fp16=True, output=out)
    assert not out.exists()
    with pytest.raises(OnnxcompError, match="keep_float must be a list"):
        onnxcomp.compress(
            two_layers(tiny),
            "w4a16-rtn",
            target="tensorrt",
            fp16=True,
            options={"convert_fp16": {"keep_float": "Softmax"}},
        )


def test_cli_fp16(tiny, tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(two_layers(tiny), source)
    runner = CliRunner()
    out = tmp_path / "m.fp16.onnx"
    args = ["compress", str(source), "-o", str(out), "--recipe", "w4a16-rtn", "--fp16"]
    ok = runner.invoke(cli, [*args, "--target", "tensorrt"])
    assert ok.exit_code == 0 and "convert_fp16:" in ok.output, ok.output
    assert runner.invoke(cli, ["check", str(out), "--target", "tensorrt"]).exit_code == 0
    out.unlink()
    bad = runner.invoke(cli, args)
    assert bad.exit_code == 2 and "does not compute in float16" in bad.output and not out.exists()
