"""build-engine without TensorRT: its call sequence against a recording stand-in of the `tensorrt`
module (TensorRT is not installable here), the trtexec line, --shapes parsing, and the refusals."""

import json
import sys
import types

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper
from onnx import helper as h

import onnxcomp
from onnxcomp.cli import cli
from onnxcomp.emit.tensorrt_engine import InputRange, build_engine, parse_shapes
from onnxcomp.errors import OnnxcompError


def recording_tensorrt_standin(calls: list, parse_ok: bool = True) -> types.ModuleType:
    """A stand-in for the `tensorrt` module that records every call made on it (NOT TensorRT)."""

    def recorder(name, result=None):
        def call(*args):
            calls.append((name, *args))
            return result

        return call

    class Cache:
        serialize = staticmethod(recorder("TimingCache.serialize", b"cache-v2"))

    class Profile:
        set_shape = staticmethod(recorder("Profile.set_shape"))

    class Config:
        add_optimization_profile = staticmethod(recorder("Config.add_optimization_profile"))
        create_timing_cache = staticmethod(recorder("Config.create_timing_cache", Cache()))
        set_timing_cache = staticmethod(recorder("Config.set_timing_cache"))
        get_timing_cache = staticmethod(recorder("Config.get_timing_cache", Cache()))

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder", type(logger).__name__))

        create_network = staticmethod(recorder("Builder.create_network", "network"))
        create_builder_config = staticmethod(recorder("Builder.create_builder_config", Config()))
        create_optimization_profile = staticmethod(recorder("Builder.create_optimization_profile", Profile()))
        build_serialized_network = staticmethod(recorder("Builder.build_serialized_network", b"engine-bytes"))

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            calls.append(("OnnxParser", network))

        parse_from_file = staticmethod(recorder("OnnxParser.parse_from_file", parse_ok))

        def get_error(self, i):
            return types.SimpleNamespace(desc=lambda: "Unsupported operator XYZ")

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            calls.append(("Logger", severity))

    module = types.ModuleType("tensorrt")
    module.__version__ = "recording-standin"
    module.Logger, module.Builder, module.OnnxParser = Logger, Builder, OnnxParser
    module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    return module


@pytest.fixture
def trt_model(tmp_path):
    """A dynamic-batch linear compressed for the tensorrt target (int4 DequantizeLinear blocks)."""
    w = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(w, "w")],
    )
    source = tmp_path / "m.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 21)], ir_version=10), source)
    out = tmp_path / "m.trt.onnx"
    options = {"quantize_weight_only": {"output_layer_bits": 0}}  # the one linear is an output layer: int4 too
    onnxcomp.compress(source, "w4a16-rtn", output=out, target="tensorrt", options=options)
    return source, out


def test_shapes_parsing():
    (r,) = parse_shapes("x:1x64,4x64,8x64")
    assert r == InputRange("x", (1, 64), (4, 64), (8, 64))
    assert [r.name for r in parse_shapes("a:1,2,3;b:1x2,1x2,1x2")] == ["a", "b"]
    for bad, why in [("x:1x64,4x64", "expected name:min,opt,max"), ("x:8,4,9", "min <= opt <= max"), ("", "empty")]:
        with pytest.raises(OnnxcompError, match=why):
            parse_shapes(bad)


def test_call_sequence_against_a_recording_standin(trt_model, tmp_path, monkeypatch):
    _, model = trt_model
    calls = []
    monkeypatch.setitem(sys.modules, "tensorrt", recording_tensorrt_standin(calls))
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"cache-v1")
    engine = tmp_path / "m.engine"
    profiles = [parse_shapes("x:1x64,4x64,8x64"), parse_shapes("x:16x64,32x64,64x64")]
    side = build_engine(model, engine, profiles, timing_cache=cache)
    names = [c[0] for c in calls]
    assert names == [
        "Logger",
        "Builder",
        "Builder.create_network",
        "OnnxParser",
        "OnnxParser.parse_from_file",
        "Builder.create_builder_config",
        "Builder.create_optimization_profile",
        "Profile.set_shape",
        "Config.add_optimization_profile",
        "Builder.create_optimization_profile",
        "Profile.set_shape",
        "Config.add_optimization_profile",
        "Config.create_timing_cache",
        "Config.set_timing_cache",
        "Builder.build_serialized_network",
        "Config.get_timing_cache",
        "TimingCache.serialize",
    ]
    assert calls[2] == ("Builder.create_network", 1 << 1)  # strongly typed, nothing else
    assert calls[7] == ("Profile.set_shape", "x", (1, 64), (4, 64), (8, 64))
    assert calls[12] == ("Config.create_timing_cache", b"cache-v1")  # the cache is reused ...
    assert cache.read_bytes() == b"cache-v2"  # ... and updated
    assert engine.read_bytes() == b"engine-bytes"
    written = json.loads((tmp_path / "m.engine.json").read_text())
    assert written == json.loads(json.dumps(side)) and written["strongly_typed"]
    assert written["versions"]["tensorrt"] == "recording-standin" and "int4" in written["precisions"]


def test_parser_error_and_non_conforming_model(trt_model, tmp_path, monkeypatch):
    source, model = trt_model
    monkeypatch.setitem(sys.modules, "tensorrt", recording_tensorrt_standin([], parse_ok=False))
    with pytest.raises(OnnxcompError, match="Unsupported operator XYZ"):
        build_engine(model, tmp_path / "a.engine", [parse_shapes("x:1x64,4x64,8x64")])
    ort_cpu = tmp_path / "m.cpu.onnx"
    onnxcomp.compress(source, "w4a16-rtn", output=ort_cpu)  # MatMulNBits: not for TensorRT
    with pytest.raises(OnnxcompError, match="does not conform to target 'tensorrt'.*'mm'"):
        build_engine(ort_cpu, tmp_path / "b.engine", [parse_shapes("x:1x64,4x64,8x64")])
    assert not (tmp_path / "a.engine").exists() and not (tmp_path / "b.engine").exists()


def test_cli_without_tensorrt_and_print_trtexec(trt_model, tmp_path, monkeypatch):
    _, model = trt_model
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    runner = CliRunner()
    engine = tmp_path / "m.engine"
    args = ["build-engine", str(model), "-o", str(engine), "--shapes", "x:1x64,4x64,8x64"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2 and result.output.strip().endswith("pip install onnxcomp[tensorrt]")
    assert not engine.exists()
    printed = runner.invoke(cli, [*args, "--timing-cache", "t.cache", "--print-trtexec"])
    assert printed.exit_code == 0
    assert printed.output.split() == [
        "trtexec",
        f"--onnx={model}",
        f"--saveEngine={engine}",
        "--stronglyTyped",
        "--minShapes=x:1x64",
        "--optShapes=x:4x64",
        "--maxShapes=x:8x64",
        "--timingCacheFile=t.cache",
    ]
    bad = runner.invoke(cli, ["build-engine", str(model), "-o", str(engine), "--shapes", "y:1,2,3"])
    assert bad.exit_code == 2 and "no input 'y'" in bad.output


def test_fp16_variant_passes_the_fp16_assertion(trt_model, tmp_path, monkeypatch):
    source, model = trt_model
    monkeypatch.setitem(sys.modules, "tensorrt", recording_tensorrt_standin([]))
    profiles = [parse_shapes("x:1x64,4x64,8x64")]
    with pytest.raises(OnnxcompError, match="--fp16 but the model has no float16 tensors"):
        build_engine(model, tmp_path / "a.engine", profiles, fp16=True)
    half = tmp_path / "m.fp16.onnx"
    onnxcomp.compress(source, "w4a16-rtn", output=half, target="tensorrt", fp16=True)
    side = build_engine(half, tmp_path / "b.engine", profiles, fp16=True)
    assert "float16" in side["precisions"] and (tmp_path / "b.engine").exists()
