"""Cross-runtime proof on MiniLM (slow): the portable and tensorrt int8 outputs conform, and run in
ONNX Runtime CPU and in OpenVINO with embeddings that agree with each other and with fp32.
SmolLM2 int4 and the full table: benchmarks/targets.py."""

import numpy as np
import pytest

import onnxcomp
from benchmarks.targets import openvino_available, openvino_runner, ort_runner
from onnxcomp import models as zoo

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not openvino_available(), reason="openvino not installed (pip install onnxcomp[openvino])")
@pytest.mark.parametrize("target", ["portable", "tensorrt"])
def test_minilm_int8_runs_alike_in_openvino_and_onnxruntime(tmp_path, target):
    source = zoo.onnx_path("minilm")
    out = tmp_path / f"minilm.{target}.onnx"
    result = onnxcomp.compress(
        source,
        "int8",
        zoo.get("minilm").calibration_feeds(),
        output=out,
        tokenizer=zoo.tokenizer("minilm"),
        target=target,
    )
    assert result.report["conformance"]["conforms"]
    feeds = zoo.get("minilm").evaluation_feeds(64)
    minilm = zoo.get("minilm")
    fp32 = minilm.embed(ort_runner(source), feeds)
    in_ort = minilm.embed(ort_runner(out), feeds)
    in_openvino = minilm.embed(openvino_runner(out), feeds)
    between = np.sum(in_ort * in_openvino, axis=1).mean()
    assert between > 0.99  # the two runtimes execute the same QDQ math (rounding differs)
    assert np.sum(in_openvino * fp32, axis=1).mean() > 0.98
    assert np.sum(in_ort * fp32, axis=1).mean() > 0.98
