"""The large-model path (weights past protobuf's 2 GB limit) on a 32 MB model with the threshold
lowered: external data mapped, calibration from a saved copy, the output written with external
data beside it under its own name, atomically. The 2.5 GB run is `benchmarks/large_model.py`."""

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir import modelio
from tests.hardening import large_models

DIM, LAYERS = 1024, 4  # 4 x 2 x 4 MiB of weights


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "stack.onnx"
    large_models.build(path, DIM, LAYERS)
    return path


@pytest.fixture
def large(monkeypatch):
    monkeypatch.setattr(modelio, "LARGE_MODEL_BYTES", 2**20)


def run(path, feed) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]


@pytest.mark.parametrize(("recipe", "ratio"), [("canonicalize", 1.01), ("int8", 0.3), ("w4a16-rtn", 0.2)])
def test_large_path_matches_the_normal_path(model_path, tmp_path, monkeypatch, recipe, ratio):
    calibration = large_models.feeds(DIM) if recipe == "int8" else None
    normal = onnxcomp.compress(model_path, recipe, calibration, output=tmp_path / "normal.onnx", use_cache=False)
    assert normal.report["output_bytes"] == (tmp_path / "normal.onnx").stat().st_size
    monkeypatch.setattr(modelio, "LARGE_MODEL_BYTES", 2**20)
    out = tmp_path / "big.onnx"
    result = onnxcomp.compress(model_path, recipe, calibration, output=out, use_cache=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data", "normal.onnx"]
    assert out.stat().st_size < 100_000  # the graph only; the tensors are in big.onnx.data
    written = out.stat().st_size + (tmp_path / "big.onnx.data").stat().st_size
    assert result.report["output_bytes"] == written
    weights = 2 * LAYERS * DIM * DIM * 4
    assert result.report["input_bytes"] > weights
    assert written < weights * ratio
    tensors = [t for t in result.model.graph.initializer if t.data_location == onnx_external()]
    assert tensors and all(modelio.external_location(t)["location"] == "big.onnx.data" for t in tensors)
    with pytest.raises(OnnxcompError, match="already written to .* with its external data"):
        result.save(tmp_path / "again.onnx")
    feed = large_models.feeds(DIM, count=1, seed=7)[0]
    np.testing.assert_allclose(run(out, feed), run(tmp_path / "normal.onnx", feed), rtol=1e-5, atol=1e-5)


def onnx_external():
    return modelio.onnx.TensorProto.EXTERNAL


def test_failed_write_leaves_nothing(model_path, tmp_path, large, monkeypatch):
    def fail(model, path, **kwargs):
        (path.parent / kwargs["external_data"]).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ir, "save", fail)
    with pytest.raises(OnnxcompError, match=r"No space left on device\); nothing was written"):
        onnxcomp.compress(model_path, "w4a16-rtn", output=tmp_path / "o.onnx")
    assert list(tmp_path.iterdir()) == []


def test_large_model_needs_an_output_path(model_path, large):
    with pytest.raises(OnnxcompError, match="needs an output path"):
        onnxcomp.compress(model_path, "w4a16-rtn")


def test_cli_writes_the_output_with_external_data(model_path, tmp_path, large):
    out = tmp_path / "o.onnx"
    result = CliRunner().invoke(cli, ["compress", str(model_path), "-o", str(out), "--recipe", "w4a16-rtn"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.onnx", "o.onnx.data"]
    assert f"wrote {out}" in result.output
    feed = large_models.feeds(DIM, count=1)[0]
    assert run(out, feed).shape == (4, DIM)


@pytest.mark.parametrize("recipe", ["w4a16-gptq", "w4a16-mixed", "w8a8-mixed", "prune"])
def test_recipes_without_a_large_model_path_are_refused_before_any_work(model_path, tmp_path, large, recipe):
    with pytest.raises(OnnxcompError, match="does not support models over 2 GiB yet"):
        onnxcomp.compress(model_path, recipe, large_models.feeds(DIM), output=tmp_path / "o.onnx")
    assert list(tmp_path.iterdir()) == []
