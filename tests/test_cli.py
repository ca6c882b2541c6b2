"""The command line as a user meets it: happy paths, --json, and every kind of bad input."""

import base64
import hashlib
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from onnxcomp.cli import cli
from onnxcomp.models import get, onnx_path


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "digits.onnx"
    path.write_bytes(onnx_path("digits").read_bytes())
    return path


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("calib")
    for i, feed in enumerate(get("digits").calibration_feeds(128)):
        np.savez(folder / f"batch_{i:03d}.npz", **feed)
    return folder


def assert_error(result, *needles):
    """Non-zero exit and one `error:` line that names what is wrong."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_compress_inspect_eval_json(digits_model, calib_dir, tmp_path):
    before = sha(digits_model)
    out, report = tmp_path / "d.int8.onnx", tmp_path / "report.json"
    result = run("compress", digits_model, "-o", out, "--calib", calib_dir, "--report", report, "--verify", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [p["pass"] for p in payload["passes"]][-3:] == ["quantize_qdq", "quantize_embedding", "remove_unused"]
    assert payload["passes"][-1]["deviation"]["cosine"] > 0.99
    assert json.loads(report.read_text())["output_bytes"] == out.stat().st_size
    assert sha(digits_model) == before, "the input model must stay untouched"

    info = json.loads(run("inspect", out, "--json").output)
    assert info["operators"]["QuantizeLinear"] >= 4
    assert {x["op"] for x in info["layers"] if x["activation"] == "uint8"} == {"Conv", "Gemm"}

    evaluation = json.loads(run("eval", digits_model, out, "--model-kind", "digits", "--runs", "5", "--json").output)
    assert evaluation["metric"]["accuracy_drop_points"] <= 0.5
    assert evaluation["bytes"]["ratio"] < 0.5

    deviation = json.loads(run("eval", digits_model, out, "--data", calib_dir, "--runs", "3", "--json").output)
    assert deviation["metric"]["samples"] == len(list(calib_dir.glob("*.npz")))
    assert deviation["metric"]["cosine"] > 0.99


def test_same_input_same_bytes(digits_model, calib_dir, tmp_path):
    outs = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for out in outs:
        assert run("compress", digits_model, "-o", out, "--calib", calib_dir, "--no-cache").exit_code == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_recipe_file_and_text_output(digits_model, calib_dir, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('base = "int8"\n[options.quantize_qdq]\nmethod = "mse"\nactivation_dtype = "int8"\n')
    out = tmp_path / "r.onnx"
    result = run("compress", digits_model, "-o", out, "--calib", calib_dir, "--recipe", recipe)
    assert result.exit_code == 0, result.output
    assert "quantize_qdq" in result.output and "wrote" in result.output
    zero_points = [
        i
        for i in onnx.load(out).graph.initializer
        if i.name.endswith("_zero_point") and i.data_type == onnx.TensorProto.INT8
    ]
    assert zero_points, "activation_dtype=int8 from the recipe file must reach the pass"


def test_export_from_onnx_file_upgrades_opset(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    src = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    result = run("export", src, "-o", tmp_path / "new.onnx", "--json")
    assert result.exit_code == 0, result.output
    assert onnx.load(tmp_path / "new.onnx").opset_import[0].version == 21


def test_recipes_lists_presets_and_options():
    result = run("recipes")
    assert result.exit_code == 0 and "int8:" in result.output and "activation_dtype" in result.output
    assert 'w8a8-smoothquant: smoothquant {"alpha": "auto", "fallback": "mul"}' in result.output


def test_smoothquant_recipe_from_the_command_line(digits_model, calib_dir, tmp_path):
    out = tmp_path / "d.sq.onnx"
    result = run(
        "compress", digits_model, "-o", out, "--calib", calib_dir, "--recipe", "w8a8-smoothquant", "--alpha", "0.6"
    )
    assert result.exit_code == 0, result.output
    assert "smoothquant: " in result.output and "linear groups smoothed" in result.output
    payload = json.loads(
        run("compress", digits_model, "-o", out, "--calib", calib_dir, "--recipe", "w8a8-smoothquant", "--json").output
    )
    details = next(p["details"] for p in payload["passes"] if p["pass"] == "smoothquant")
    assert all(
        g["alpha"] is None or 0 <= g["alpha"] <= 1
        for g in details["smoothed"] + details["not_smoothed"]
        if "alpha" in g
    )


def test_awq_recipe_from_the_command_line_prints_the_weight_only_summary(digits_model, calib_dir, tmp_path):
    result = run("compress", digits_model, "-o", tmp_path / "d.awq.onnx", "--calib", calib_dir, "--recipe", "w4a16-awq")
    assert result.exit_code == 0, result.output
    assert "quantize_weight_only_awq: " in result.output and "groups scaled by AWQ" in result.output
    result = run("compress", digits_model, "-o", tmp_path / "d.awq.onnx", "--recipe", "w4a16-awq")
    assert result.exit_code == 2 and "needs calibration data: pass --calib" in result.output


def test_group_size_and_asymmetric_flags_reach_every_weight_only_pass(digits_model, calib_dir, tmp_path):
    out = tmp_path / "d.q.onnx"
    payload = json.loads(
        run(
            "compress",
            digits_model,
            "-o",
            out,
            "--calib",
            calib_dir,
            "--recipe",
            "w4a16-awq-gptq",
            "--group-size",
            "32",
            "--asymmetric",
            "--json",
        ).output
    )
    layers = next(p["details"] for p in payload["passes"] if p["pass"] == "quantize_weight_only_gptq")["layers"]
    assert layers and all(x["group_size"] == 32 for x in layers)
    hidden, head = layers[:-1], layers[-1]  # the output layer stays symmetric (8 bits) whatever --asymmetric says
    assert hidden and not any(x["symmetric"] for x in hidden) and head["symmetric"] and head["bits"] == 8
    result = run("compress", digits_model, "-o", tmp_path / "bad.onnx", "--calib", calib_dir, "--group-size", "32")
    assert result.exit_code == 2 and "recipe 'int8' has no weight-only pass" in result.output
    assert "w4a16-awq-gptq" in result.output and not (tmp_path / "bad.onnx").exists()


def image_sources(page: str) -> list[str]:
    """The src of every <img> of an HTML page, read by a real HTML parser."""
    sources = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                sources.append(dict(attrs)["src"])

    Images().feed(page)
    return sources


def test_mixed_precision_under_a_size_budget(digits_model, calib_dir, tmp_path):
    out = tmp_path / "d.mixed.onnx"
    args = ("compress", digits_model, "-o", out, "--calib", calib_dir, "--recipe", "w4a16-mixed")
    page = tmp_path / "report.html"
    result = run(*args, "--size-budget", "0.9x", "--strict", "--report", page)
    assert result.exit_code == 0, result.output
    assert "plan_precision: 2 units" in result.output and "measured output error" in result.output
    assert "size budget" in result.output and "met" in result.output
    images = image_sources(page.read_text())
    assert len(images) == 3
    for src in images:  # every plot decodes as a PNG
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    payload = json.loads(run(*args, "--max-error", "1e-3", "--json").output)
    plan = next(p["details"] for p in payload["passes"] if p["pass"] == "plan_precision")
    assert plan["predicted_error"] <= 1e-3 and payload["final_error"]["value"] > 0


# -- bad input: one clear line, exit 2, nothing written, input untouched ----------------------


def write_calib(folder: Path, **feed) -> Path:
    folder.mkdir()
    np.savez(folder / "s.npz", **feed)
    return folder


@pytest.mark.parametrize(
    "case, needles",
    [
        ("not_onnx", ["not a readable ONNX model"]),
        ("truncated", ["bad.onnx"]),
        ("checker", ["rejected by the ONNX checker"]),
        ("calib_missing", ["calibration data not found"]),
        ("calib_empty", ["calibration folder is empty"]),
        ("calib_nan", ["'image'", "NaN"]),
        ("calib_name", ["unknown input name", "'pixels'"]),
        ("calib_dtype", ["'image'", "dtype"]),
        ("calib_rank", ["'image'", "rank"]),
        ("recipe_unknown", ["unknown recipe", "int9"]),
        ("option_unknown", ["unknown option", "bogus"]),
        ("exclude_missing", ["--exclude", "no_such_node"]),
        ("output_is_input", ["same as the input"]),
        ("output_folder", ["does not exist"]),
        ("alpha_range", ["alpha must be a number in [0, 1]", "1.5"]),
        ("alpha_text", ["--alpha", "'strong'"]),
        ("alpha_without_smoothquant", ["'smoothquant'", "does not run"]),
        ("budget_malformed", ["size budget", "'abc'"]),
        ("budget_without_mixed", ["--size-budget", "mixed-precision recipes", "'int8'"]),
        ("budget_below_minimum", ["below the smallest model these candidates reach"]),
        ("budget_and_error", ["not both"]),
        ("strict_without_mixed", ["--strict", "mixed-precision recipes", "'int8'"]),
    ],
)
def test_bad_input(case, needles, digits_model, calib_dir, tmp_path):
    model, calib, out, extra = digits_model, calib_dir, tmp_path / "out.onnx", []
    x = get("digits").calibration_feeds(8)[0]["image"]
    if case == "not_onnx":
        model = tmp_path / "bad.onnx"
        model.write_text("hello, not a model")
    elif case == "truncated":
        model = tmp_path / "bad.onnx"
        model.write_bytes(digits_model.read_bytes()[:5000])
    elif case == "checker":
        proto = onnx.load(digits_model)
        proto.graph.node[0].input[0] = "undefined_tensor"
        model = tmp_path / "rejected.onnx"
        model.write_bytes(proto.SerializeToString())
    elif case == "calib_missing":
        calib = tmp_path / "nowhere"
    elif case == "calib_empty":
        calib = tmp_path / "empty"
        calib.mkdir()
    elif case == "calib_nan":
        x = x.copy()
        x[0, 0, 0, 0] = np.nan
        calib = write_calib(tmp_path / "c", image=x)
    elif case == "calib_name":
        calib = write_calib(tmp_path / "c", pixels=x)
    elif case == "calib_dtype":
        calib = write_calib(tmp_path / "c", image=x.astype(np.int64))
    elif case == "calib_rank":
        calib = write_calib(tmp_path / "c", image=x[0])
    elif case == "recipe_unknown":
        extra = ["--recipe", "int9"]
    elif case == "option_unknown":
        recipe = tmp_path / "r.yaml"
        recipe.write_text("base: int8\noptions:\n  quantize_qdq:\n    bogus: 1\n")
        extra = ["--recipe", recipe]
    elif case == "exclude_missing":
        extra = ["--exclude", "no_such_node"]
    elif case == "output_is_input":
        out = model
    elif case == "output_folder":
        out = tmp_path / "missing_dir" / "out.onnx"
    elif case == "alpha_range":
        extra = ["--recipe", "w8a8-smoothquant", "--alpha", "1.5"]
    elif case == "alpha_text":
        extra = ["--recipe", "w8a8-smoothquant", "--alpha", "strong"]
    elif case == "alpha_without_smoothquant":
        extra = ["--alpha", "0.5"]
    elif case == "budget_malformed":
        extra = ["--recipe", "w4a16-mixed", "--size-budget", "abc"]
    elif case == "budget_without_mixed":
        extra = ["--size-budget", "0.5x"]
    elif case == "budget_below_minimum":
        extra = ["--recipe", "w4a16-mixed", "--size-budget", "0.01x"]
    elif case == "strict_without_mixed":
        extra = ["--strict"]
    elif case == "budget_and_error":
        extra = ["--recipe", "w4a16-mixed", "--size-budget", "0.5x", "--max-error", "0.1"]
    before = sha(model) if model.exists() else None
    result = run("compress", model, "-o", out, "--calib", calib, *extra)
    assert_error(result, *needles)
    if case != "output_is_input":
        assert not out.exists(), "no partial output"
    assert list(tmp_path.glob(".*.tmp")) == []
    if before is not None:
        assert sha(model) == before


def test_default_output_name_beside_the_model(digits_model, calib_dir, tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(digits_model.read_bytes())
    result = run("compress", model, "--calib", calib_dir)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "net.int8.onnx").is_file()


@pytest.mark.parametrize("recipe", ["int8", "w8a8-smoothquant"])
def test_demo_runs_the_whole_job(recipe, tmp_path):
    result = run("demo", "--model", "digits", "--recipe", recipe, "--out-dir", tmp_path, "--runs", "2", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert (tmp_path / f"digits.{recipe}.onnx").exists() and (tmp_path / "digits.fp32.onnx").exists()
    assert payload["evaluation"]["metric"]["accuracy_drop_points"] <= 0.5
    assert recipe in run("demo", "--model", "digits", "--recipe", recipe, "--out-dir", tmp_path, "--runs", "2").output


def test_demo_rejects_a_recipe_that_is_not_a_preset(tmp_path):
    assert_error(
        run("demo", "--model", "digits", "--recipe", "int9", "--out-dir", tmp_path), "--recipe 'int9'", "presets:"
    )
