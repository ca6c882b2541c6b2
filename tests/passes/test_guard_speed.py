"""The speed guard: quantized layers back to float (revert), the decision it takes from timings, and the
CLI around it, on the digits CNN in ONNX Runtime."""

import base64
import io
import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from PIL import Image

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.errors import OnnxcompError
from onnxcomp.passes import guard_speed
from onnxcomp.passes.guard_speed import parse_latency_budget, parse_timing_shapes
from onnxcomp.precision.revert import layer_kind, quantized_layers, revert
from onnxcomp.runtime import ort_session


@pytest.fixture(autouse=True)
def guard_on(monkeypatch):
    monkeypatch.setenv("ONNXCOMP_SPEED_GUARD", "1")


@pytest.fixture(scope="module")
def images(digits):
    return np.concatenate([feed["image"] for feed in digits.calibration_feeds(64)])[:64]


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize("recipe", ["int8", "w4a16-rtn"])
def test_revert_leaves_float_layers_computing_the_quantized_weights(recipe, digits, digits_path, images):
    result = onnxcomp.compress(str(digits_path), recipe, calibration=digits.calibration_feeds(), speed_guard=False)
    float_out = ort_session(str(digits_path)).run(None, {"image": images})[0]
    quantized_out = ort_session(result.model).run(None, {"image": images})[0]
    model = ir.serde.deserialize_model(result.model)
    layers = quantized_layers(model)
    expected = {"int8": ["Conv", "Conv", "Gemm", "Gemm"], "w4a16-rtn": ["MatMulNBits", "MatMulNBits"]}[recipe]
    assert [node.op_type for node in layers] == expected
    assert len({layer_kind(node) for node in layers}) == len(layers)  # four different shapes

    revert(model, layers)
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    assert not quantized_layers(model)
    assert not {"QuantizeLinear", "DequantizeLinear", "MatMulNBits"} & {n.op_type for n in proto.graph.node}
    reverted_out = ort_session(proto).run(None, {"image": images})[0]
    # the reverted model computes with the dequantized weights: closer to the quantized model than to
    # the float one for weight-only (same weights), and within int8 weight noise of the float one
    assert np.abs(reverted_out - quantized_out).max() < 0.15 * np.abs(quantized_out).max()
    assert np.abs(reverted_out - float_out).max() > 0  # weights are the quantized ones, not the originals
    assert (reverted_out.argmax(1) == float_out.argmax(1)).mean() > 0.95


def test_reverting_some_layers_keeps_the_others_quantized(digits, digits_int8):
    model = ir.serde.deserialize_model(digits_int8.model)
    layers = quantized_layers(model)
    revert(model, layers[2:])  # the two Gemms
    assert [node.name for node in quantized_layers(model)] == [node.name for node in layers[:2]]
    feed = digits.calibration_feeds(8)[0]
    ort_session(ir.to_proto(model)).run(None, feed)


def _scripted_timer(monkeypatch, ratios: dict[int, float]):
    """A clock that says the model's latency ratio from how many quantized layers are left in it."""
    seen = []

    def ratio(self, data: bytes) -> float:
        left = len(quantized_layers(ir.serde.deserialize_model(onnx.load_from_string(data))))
        seen.append(left)
        return ratios[left]

    monkeypatch.setattr(guard_speed._Timer, "ratio", ratio)
    return seen


def test_guard_reverts_only_what_makes_the_model_slower(monkeypatch, digits, digits_path, tmp_cache):
    # 4 quantized layers: 1.3x; reverting any one layer alone: 3 left → 1.25x (gain 0.05), reverting
    # the kinds one after another: 2 left → 1.02x (within tolerance 0.05 of 1.0: stop there)
    seen = _scripted_timer(monkeypatch, {4: 1.3, 3: 1.25, 2: 1.02, 1: 0.9, 0: 0.8})
    result = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds())
    details = result.report["passes"][-1]["details"]
    assert result.report["passes"][-1]["pass"] == "guard_speed"
    assert details["before"] == 1.3 and details["after"] == 1.02 and details["met"]
    assert len(details["reverted_layers"]) == 2
    assert len(quantized_layers(ir.serde.deserialize_model(result.model))) == 2
    assert seen == [4, 3, 3, 3, 3, 3, 2]  # before, each kind alone, then the best two together
    assert result.report["latency_budget"] == {"ratio": 1.0, "measured_before": 1.3, "measured": 1.02, "met": True}


def test_guard_keeps_a_revert_only_when_it_makes_the_model_faster(monkeypatch, digits, digits_path, tmp_cache):
    # any one layer back in float: 1.2x; a second one on top: slower again (1.25x); all four: 1.4x
    _scripted_timer(monkeypatch, {4: 1.3, 3: 1.2, 2: 1.25, 0: 1.4})
    result = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds())
    details = result.report["passes"][-1]["details"]
    assert len(details["reverted_layers"]) == 1 and details["after"] == 1.2 and not details["met"]
    assert [t["ratio"] for t in details["trials"]][-1] == 1.4  # the full fallback was tried, and refused


def test_guard_keeps_a_fast_model_and_falls_back_fully_when_nothing_else_helps(
    monkeypatch, digits, digits_path, tmp_cache
):
    _scripted_timer(monkeypatch, {4: 0.7})
    fast = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds())
    unguarded = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds(), speed_guard=False)
    assert fast.model.SerializeToString() == unguarded.model.SerializeToString()
    assert not fast.report["passes"][-1]["modified"]

    _scripted_timer(monkeypatch, {4: 1.5, 3: 1.52, 2: 1.49, 0: 1.1})  # no kind helps; all in float: 1.1x
    slow = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds(), use_cache=False)
    details = slow.report["passes"][-1]["details"]
    assert details["after"] == 1.1 and not details["met"] and len(details["reverted_layers"]) == 4
    assert slow.report["latency_budget"]["met"] is False


def test_decision_is_cached_so_a_rebuild_gives_the_same_bytes(monkeypatch, digits, digits_path, tmp_cache):
    _scripted_timer(monkeypatch, {4: 1.3, 3: 1.25, 2: 1.02, 1: 0.9, 0: 0.8})
    first = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds())
    _scripted_timer(monkeypatch, {})  # a second timing would fail: the decision must come from the cache
    second = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds())
    assert second.model.SerializeToString() == first.model.SerializeToString()
    assert second.report["passes"][-1]["details"]["cached"]
    assert list((tmp_cache / "speed_guard").glob("*.json"))


def test_guard_is_off_when_asked_and_for_targets_not_timed_here(monkeypatch, digits, digits_path):
    monkeypatch.setenv("ONNXCOMP_SPEED_GUARD", "0")
    off = onnxcomp.compress(str(digits_path), "int8", calibration=digits.calibration_feeds())
    assert "guard_speed" not in [entry["pass"] for entry in off.report["passes"]]
    monkeypatch.setenv("ONNXCOMP_SPEED_GUARD", "1")
    portable = onnxcomp.compress(
        str(digits_path), "int8", calibration=digits.calibration_feeds(), target="portable", use_cache=False
    )
    assert portable.report["passes"][-1]["details"] == {"skipped": "target portable is not timed on this machine"}


def test_cli_times_for_real_and_strict_fails_an_unreachable_budget(digits_path, tmp_path, tmp_cache):
    out, page = tmp_path / "digits.int8.onnx", tmp_path / "report.html"
    result = run_cli(
        "compress", digits_path, "-o", out, "--model-kind", "digits", "--shapes", "image:8x1x8x8",
        "--latency-budget", "0.01x", "--strict", "--json", "--report", page,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert out.exists()  # written anyway
    assert "over its budget of 0.01x" in result.output
    report = json.loads(result.stdout)
    details = report["passes"][-1]["details"]
    assert details["shapes"] == [{"image": [8, 1, 8, 8]}] and details["trials"]
    assert report["latency_budget"]["met"] is False and report["latency_budget"]["measured_before"] > 0
    html = page.read_text()
    assert "<h2>Speed guard</h2>" in html and "missed" in html
    section = html.split("<h2>Speed guard</h2>", 1)[1]
    png = section.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    Image.open(io.BytesIO(base64.b64decode(png))).verify()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--shapes", "pixels:1x1x8x8"], "--shapes: the model has no input 'pixels' (inputs: image)"),
        (["--shapes", "image:1x8x8"], "--shapes: image is ?x1x8x8, which 1x8x8 does not fit"),
        (["--shapes", "image=1x1x8x8"], "--shapes: expected name:DIMxDIM"),
        (["--latency-budget", "fast"], "latency budget must be a positive fraction"),
        (["--latency-budget", "0x"], "latency budget must be a positive fraction"),
        (["--no-speed-guard", "--latency-budget", "0.7x"], "which --no-speed-guard"),
        (["--no-speed-guard", "--strict"], "--strict checks a size budget"),
    ],
)
def test_bad_guard_options_are_one_line_and_nothing_is_written(digits_path, tmp_path, args, message):
    out = tmp_path / "out.onnx"
    result = run_cli("compress", digits_path, "-o", out, "--model-kind", "digits", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_default_timing_shapes_add_a_one_token_step_for_language_models(digits_path):
    from onnxcomp import models
    from onnxcomp.models import minilm

    digits_feeds = guard_speed.timing_feeds(onnx.load(digits_path), {}, None)
    assert [{k: v.shape for k, v in f.items()} for f in digits_feeds] == [{"image": (1, 1, 8, 8)}]
    encoder = onnx.load(models.onnx_path("minilm"))  # a sequence axis, but no logits: one shape
    feeds = guard_speed.timing_feeds(encoder, {}, minilm.calibration_feeds())
    assert [f["input_ids"].shape for f in feeds] == [(1, 128)]
    given = guard_speed.timing_feeds(encoder, {"input_ids": [2, 16]}, None)  # the others follow the first given
    assert len(given) == 1 and {k: v.shape for k, v in given[0].items()} == dict.fromkeys(given[0], (2, 16))
    decoder = onnx.load(models.onnx_path("minilm"))
    decoder.graph.output[0].name = "logits"  # what makes it a language model here
    decoder.graph.node[-1].output[0] = "logits"
    feeds = guard_speed.timing_feeds(decoder, {}, minilm.calibration_feeds())
    assert [f["input_ids"].shape for f in feeds] == [(1, 128), (1, 1)]
    assert all(f["attention_mask"].shape == f["input_ids"].shape for f in feeds)


def test_parsers():
    assert parse_latency_budget("0.7x") == 0.7 and parse_latency_budget(1) == 1.0
    assert parse_timing_shapes("a:1x128;b:1x128") == {"a": [1, 128], "b": [1, 128]}
    assert parse_timing_shapes("a:1x128,b:2") == {"a": [1, 128], "b": [2]}
    with pytest.raises(OnnxcompError):
        parse_latency_budget(True)
    with pytest.raises(OnnxcompError):
        onnxcomp.compress("x.onnx", "int8", speed_guard="yes")
