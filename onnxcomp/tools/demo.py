"""The built-in end-to-end job: export a zoo model, calibrate, compress with a recipe, compare."""

import shutil
from pathlib import Path

from onnxcomp import models
from onnxcomp.api import compress
from onnxcomp.passes.recipes import load_recipe
from onnxcomp.tools.evaluate import evaluate


def run_demo(
    kind: str = "minilm", out_dir: str | Path = "out", method: str = "percentile", runs: int = 50, recipe: str = "int8"
) -> dict:
    """Writes <out_dir>/<kind>.fp32.onnx and <kind>.<recipe>.onnx; returns the report and evaluation."""
    zoo = models.get(kind)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    original = out / f"{kind}.fp32.onnx"
    compressed = out / f"{kind}.{recipe}.onnx"
    shutil.copyfile(models.onnx_path(kind), original)
    runs_qdq = any(name == "quantize_qdq" for name, _ in load_recipe(recipe))
    result = compress(
        original,
        recipe,
        zoo.calibration_feeds(),
        output=compressed,
        options={"quantize_qdq": {"method": method}} if runs_qdq else None,
    )
    evaluation = evaluate(original, compressed, model_kind=kind, runs=runs)
    return {"report": result.report, "evaluation": evaluation}
