"""External data stays inside the model's folder: absolute locations, `..`, and symlinks that lead
outside are refused with one line; inspect reports external files and counts their bytes."""

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper
from onnx import helper as h

from onnxcomp.cli import cli
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.modelio import read_model_file


def external_model(folder: Path, location: str = "w.bin") -> Path:
    """A MatMul model whose weight lives in `folder/location`."""
    weight = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
        "ext",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [numpy_helper.from_array(weight, "W")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10)
    path = folder / "model.onnx"
    (folder / location).parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def set_location(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    path.write_bytes(model.SerializeToString())


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    return folder


def test_external_data_inside_the_folder_is_read(model_dir):
    proto, _ = read_model_file(external_model(model_dir, "weights/w.bin"))
    assert numpy_helper.to_array(proto.graph.initializer[0]).shape == (64, 64)


def test_inspect_lists_external_files_and_counts_their_bytes(model_dir):
    path = external_model(model_dir)
    result = CliRunner().invoke(cli, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["external_data"] == ["w.bin"]
    assert info["file_bytes"] == path.stat().st_size + (model_dir / "w.bin").stat().st_size
    text = CliRunner().invoke(cli, ["inspect", str(path)]).output
    assert "external data: w.bin" in text


def test_absolute_location_is_refused(model_dir):
    path = external_model(model_dir)
    set_location(path, str(model_dir / "w.bin"))  # the file exists: only the form is wrong
    with pytest.raises(OnnxcompError, match="only a path relative to the model's folder"):
        read_model_file(path)


def test_dotdot_location_is_refused(model_dir):
    path = external_model(model_dir)
    os.replace(model_dir / "w.bin", model_dir.parent / "w.bin")
    set_location(path, "../w.bin")
    with pytest.raises(OnnxcompError, match=r"'\.\.' would leave"):
        read_model_file(path)


def test_symlink_leading_outside_is_refused(model_dir, tmp_path):
    path = external_model(model_dir)
    secret = tmp_path / "secret.bin"
    os.replace(model_dir / "w.bin", secret)
    (model_dir / "w.bin").symlink_to(secret)
    with pytest.raises(OnnxcompError, match="leads outside the model's folder"):
        read_model_file(path)
    (model_dir / "w.bin").unlink()  # a symlinked folder on the way is caught the same way
    (model_dir / "data").symlink_to(tmp_path, target_is_directory=True)
    set_location(path, "data/secret.bin")
    with pytest.raises(OnnxcompError, match="leads outside the model's folder"):
        read_model_file(path)


def test_symlink_inside_the_folder_is_refused_by_onnx_in_one_line(model_dir):
    # ours would allow it (it stays inside); the onnx library's loader refuses every symlink
    path = external_model(model_dir)
    os.replace(model_dir / "w.bin", model_dir / "real.bin")
    (model_dir / "w.bin").symlink_to("real.bin")
    with pytest.raises(OnnxcompError, match="cannot read its external data") as info:
        read_model_file(path)
    assert "\n" not in str(info.value)


def test_truncated_external_file_is_refused(model_dir):
    path = external_model(model_dir)
    data = (model_dir / "w.bin").read_bytes()
    (model_dir / "w.bin").write_bytes(data[:100])
    with pytest.raises(OnnxcompError, match="past the end of the file"):
        read_model_file(path)


def test_cli_refusal_is_one_line_and_writes_nothing(model_dir, tmp_path):
    path = external_model(model_dir)
    set_location(path, "/etc/hostname")
    before = sorted(p.name for p in model_dir.iterdir())
    result = CliRunner().invoke(cli, ["compress", str(path), "--recipe", "w4a16-rtn"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and result.output.startswith("error: "), result.output
    assert "'W'" in result.output and "/etc/hostname" in result.output
    assert sorted(p.name for p in model_dir.iterdir()) == before


def test_in_memory_model_over_the_protobuf_limit_is_refused_before_any_work(model_dir, monkeypatch):
    import onnxcomp
    from onnxcomp.ir import modelio

    proto = onnx.load(str(external_model(model_dir)))  # external data loaded: one ModelProto
    monkeypatch.setattr(modelio, "PROTOBUF_LIMIT", 64 * 64 * 4)  # this model's weight: stands in for 2 GiB
    with pytest.raises(OnnxcompError, match="past protobuf's 2 GiB limit; save it with external data"):
        onnxcomp.compress(proto, "w4a16-rtn", output=model_dir / "o.onnx")
    assert not (model_dir / "o.onnx").exists()
