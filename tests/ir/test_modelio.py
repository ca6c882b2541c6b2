"""onnxcomp.ir.modelio and the file handling of compress(): bad inputs give one clear OnnxcompError
line naming the file, and nothing is written on failure."""

import hashlib
import os
import stat

import numpy as np
import onnx
import pytest
from onnx import helper as h

import onnxcomp
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir import modelio
from onnxcomp.ir.modelio import check_output_path, load_proto, save_model, upgrade_opset, write_bytes_atomic


@pytest.fixture
def good_model(tiny):
    rng = np.random.default_rng(0)
    return tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", ["n", 4])],
        [("y", ["n", 3])],
        {"w": rng.standard_normal((4, 3)).astype(np.float32)},
    )


@pytest.fixture
def good_path(tmp_path, good_model):
    path = tmp_path / "good.onnx"
    onnx.save(good_model, str(path))
    return path


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


# -- load_proto -------------------------------------------------------------------------------------
def test_load_good_model(good_path, good_model):
    assert load_proto(good_path) == good_model


def test_missing_file(tmp_path):
    with pytest.raises(OnnxcompError, match=r"missing\.onnx: no such file"):
        load_proto(tmp_path / "missing.onnx")


@pytest.mark.parametrize("content", [b"hello, I am not a model\n", bytes(range(256)) * 4, b""])
def test_not_an_onnx_file(tmp_path, content):
    path = tmp_path / "junk.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxcompError, match=r"junk\.onnx: not (a readable ONNX model|an ONNX model)") as info:
        load_proto(path)
    one_line(info)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, good_path, fraction):
    data = good_path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(OnnxcompError, match=r"truncated\.onnx: ") as info:
        load_proto(path)
    one_line(info)


def test_checker_rejected_model(tmp_path):
    graph = h.make_graph(
        [h.make_node("Relu", ["x", "ghost"], ["y"], name="bad_relu")],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
    )
    path = tmp_path / "invalid.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10), str(path))
    with pytest.raises(OnnxcompError, match=r"invalid\.onnx: rejected by the ONNX checker: .*ghost") as info:
        load_proto(path)
    one_line(info)
    with pytest.raises(OnnxcompError, match=r"invalid\.onnx: rejected by the ONNX checker"):
        onnxcomp.compress(path, "canonicalize")


def test_shape_inference_rejected_model(tmp_path):
    # checker-valid structure, but MatMul shapes cannot agree
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])],
        [onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w")],
    )
    path = tmp_path / "shapes.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10), str(path))
    with pytest.raises(OnnxcompError, match=r"shapes\.onnx: rejected by the ONNX checker"):
        load_proto(path)


def test_upgrade_opset_never_downgrades(tiny):
    old = tiny.make_model([h.make_node("Relu", ["x"], ["y"])], [("x", [2])], [("y", [2])], opset=13)
    assert modelio.model_opset(upgrade_opset(old, 21)) == 21
    assert modelio.model_opset(upgrade_opset(old, 11)) == 13


# -- output paths --------------------------------------------------------------------------------------
def test_output_equal_to_input(good_path, tmp_path):
    before = good_path.read_bytes()
    for output in (good_path, tmp_path / "sub" / ".." / good_path.name):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OnnxcompError, match="output path is the same as the input"):
            onnxcomp.compress(good_path, "canonicalize", output=output)
    assert good_path.read_bytes() == before


def test_output_folder_missing(good_path, tmp_path):
    with pytest.raises(OnnxcompError, match=r"folder .*nowhere does not exist"):
        onnxcomp.compress(good_path, "canonicalize", output=tmp_path / "nowhere" / "out.onnx")
    assert not (tmp_path / "nowhere").exists()


def test_output_folder_not_writable(good_path, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        with pytest.raises(OnnxcompError, match=r"readonly is not writable"):
            onnxcomp.compress(good_path, "canonicalize", output=folder / "out.onnx")
        assert listing(folder) == []
    finally:
        folder.chmod(stat.S_IRWXU)


def test_output_folder_reported_unwritable(good_path, tmp_path, monkeypatch):
    """The same branch where the test runs as root: creating a probe file in the folder fails."""
    folder = tmp_path / "out"
    folder.mkdir()
    real_mkstemp = modelio.tempfile.mkstemp

    def refusing_mkstemp(*args, dir=None, **kwargs):
        if str(dir) == str(folder):
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(modelio.tempfile, "mkstemp", refusing_mkstemp)
    with pytest.raises(OnnxcompError, match=r"out\.onnx: folder .*out is not writable"):
        onnxcomp.compress(good_path, "canonicalize", output=folder / "out.onnx")
    assert listing(folder) == []


@pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0 and os.access("/sys", os.W_OK) and os.path.isdir("/sys/kernel")),
    reason="needs a folder that os.access calls writable but that refuses new files (root + sysfs)",
)
def test_unwritable_folder_that_os_access_calls_writable(good_path):
    with pytest.raises(OnnxcompError, match="sys"):
        onnxcomp.compress(good_path, "canonicalize", output="/sys/onnxcomp-test-output.onnx")


# -- atomic writes -----------------------------------------------------------------------------------------
def test_save_is_atomic_and_cleans_up_on_failure(tmp_path, good_model, monkeypatch):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous version")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(modelio.os, "replace", failing_replace)
    with pytest.raises(OnnxcompError, match="disk full"):  # one line, not an OSError traceback
        save_model(good_model, target)
    assert listing(tmp_path) == ["out.onnx"], "no temp file left behind"
    assert target.read_bytes() == b"previous version", "the old file is untouched"


def test_save_model_writes_deterministic_bytes(tmp_path, good_model):
    size = save_model(good_model, tmp_path / "a.onnx")
    assert size == (tmp_path / "a.onnx").stat().st_size
    assert (tmp_path / "a.onnx").read_bytes() == good_model.SerializeToString(deterministic=True)
    assert listing(tmp_path) == ["a.onnx"]


def test_saved_file_mode_follows_umask(tmp_path, good_model):
    old = os.umask(0o022)
    try:
        save_model(good_model, tmp_path / "a.onnx")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.onnx").stat().st_mode) == 0o644


def test_write_bytes_atomic_overwrites(tmp_path):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"one")
    write_bytes_atomic(path, b"two")
    assert path.read_bytes() == b"two" and listing(tmp_path) == ["f.bin"]


def test_check_output_path_accepts_a_new_file(tmp_path, good_path):
    assert check_output_path(tmp_path / "new.onnx", good_path) == tmp_path / "new.onnx"


# -- nothing written when compress fails; the input is never modified ---------------------------------------
def test_failing_compress_writes_nothing(good_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    digest = hashlib.sha256(good_path.read_bytes()).hexdigest()
    with pytest.raises(OnnxcompError, match="pass 'quantize_qdq' needs calibration data"):
        onnxcomp.compress(good_path, [("quantize_qdq", {})], output=out / "model.onnx")
    with pytest.raises(OnnxcompError, match="needs calibration data"):
        onnxcomp.compress(good_path, "int8", output=out / "model.onnx")
    assert listing(out) == []
    assert hashlib.sha256(good_path.read_bytes()).hexdigest() == digest


def test_successful_compress_writes_exactly_the_output(good_path, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = onnxcomp.compress(good_path, "canonicalize", output=out / "model.onnx")
    assert listing(out) == ["model.onnx"]
    assert (out / "model.onnx").read_bytes() == result.model.SerializeToString(deterministic=True)
    assert load_proto(out / "model.onnx") == result.model
    assert result.report["output"] == str(out / "model.onnx")
    assert result.report["output_bytes"] == (out / "model.onnx").stat().st_size
