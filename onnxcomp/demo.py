"""The built-in end-to-end job: export a zoo model, calibrate, compress to int8, compare."""

import shutil
from pathlib import Path

from . import models
from .compiler import compress
from .evaluate import evaluate


def run_demo(kind: str = "minilm", out_dir: str | Path = "out", method: str = "percentile", runs: int = 50) -> dict:
    """Writes <out_dir>/<kind>.fp32.onnx and <kind>.int8.onnx; returns the report and evaluation."""
    zoo = models.get(kind)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    original = out / f"{kind}.fp32.onnx"
    compressed = out / f"{kind}.int8.onnx"
    shutil.copyfile(models.onnx_path(kind), original)
    result = compress(original, "int8", zoo.calibration_feeds(), output=compressed,
                      options={"quantize_qdq": {"method": method}})
    evaluation = evaluate(original, compressed, model_kind=kind, runs=runs)
    return {"report": result.report, "evaluation": evaluation}
