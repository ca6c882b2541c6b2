"""Models written with `format = "custom"` (ai.onnxcomp MatMulInt4) run inside onnxcomp itself:
`compress --verify` and `eval` register the project's operator library (built once into the
cache) in every ONNX Runtime session of such a model; a library that cannot be built is one line."""

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper
from onnx import helper as h

import onnxcomp
from onnxcomp import runtime
from onnxcomp.cli import cli
from onnxcomp.custom_ops import DOMAIN, BuildError
from onnxcomp.errors import OnnxcompError

RECIPE = 'base = "w4a16-rtn"\n[options.quantize_weight_only]\nformat = "custom"\n'


def mlp() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph = h.make_graph(
        [
            h.make_node("MatMul", ["x", "W1"], ["h1"], name="fc1"),
            h.make_node("Relu", ["h1"], ["r1"], name="relu1"),
            h.make_node("MatMul", ["r1", "W2"], ["y"], name="fc2"),
        ],
        "mlp",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 128])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [
            numpy_helper.from_array(rng.standard_normal((128, 256)).astype(np.float32) / 11, "W1"),
            numpy_helper.from_array(rng.standard_normal((256, 64)).astype(np.float32) / 16, "W2"),
        ],
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)


@pytest.fixture
def files(tmp_path):
    onnx.save(mlp(), tmp_path / "mlp.onnx")
    (tmp_path / "custom.toml").write_text(RECIPE)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        np.savez(data / f"{i}.npz", x=rng.standard_normal((4, 128)).astype(np.float32))
    return tmp_path


def test_compress_verify_and_eval_run_custom_format_models(files):
    out = files / "mlp.custom.onnx"
    result = onnxcomp.compress(
        files / "mlp.onnx", files / "custom.toml", str(files / "data"), output=out, verify=True, use_cache=False
    )
    model = onnx.load(out)
    assert any(n.domain == DOMAIN and n.op_type == "MatMulInt4" for n in model.graph.node)
    deviation = next(e for e in result.report["passes"] if e["pass"] == "quantize_weight_only")["deviation"]
    assert deviation["cosine"] > 0.99
    res = CliRunner().invoke(
        cli, ["eval", str(files / "mlp.onnx"), str(out), "--data", str(files / "data"), "--runs", "2", "--json"]
    )
    assert res.exit_code == 0, res.output
    assert '"cosine"' in res.output


def test_unbuildable_library_is_one_line(files, monkeypatch):
    out = files / "mlp.custom.onnx"
    onnxcomp.compress(files / "mlp.onnx", files / "custom.toml", output=out)

    def no_compiler(cuda=None):
        raise BuildError("no C++ compiler found (looked for $CXX, g++, c++, clang++); install g++")

    monkeypatch.setattr(runtime, "library_path", no_compiler)
    with pytest.raises(OnnxcompError, match="uses ai.onnxcomp operators .* cannot be built: no C\\+\\+ compiler"):
        runtime.ort_session(out)
    res = CliRunner().invoke(
        cli, ["eval", str(files / "mlp.onnx"), str(out), "--data", str(files / "data"), "--runs", "1"]
    )
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "onnxcomp build-ops" in res.output, res.output
    runtime.ort_session(files / "mlp.onnx")  # a model without the domain does not need the library
