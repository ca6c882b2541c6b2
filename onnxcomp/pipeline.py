"""The pass manager: runs a recipe's passes in order, checks the model after each, reports.

After every pass the model is serialized and must pass the ONNX checker and strict shape
inference. With `verify`, the current model also runs in ONNX Runtime on a sample feed and
its output deviation from the original model is recorded. The report has, per pass: wall
time, nodes added/removed, initializer bytes before/after, and the deviation.
"""

import time

import numpy as np
import onnx_ir as ir

from .errors import OnnxcompError
from .graph import initializer_bytes, op_histogram
from .modelio import check_model
from .passbase import CompressionPass, Context
from .runtime import ort_session


def output_deviation(reference: list[np.ndarray], actual: list[np.ndarray]) -> dict:
    """Worst max-abs error, relative L2 error and cosine over all outputs."""
    worst = {"max_abs": 0.0, "rel_l2": 0.0, "cosine": 1.0}
    for ref, act in zip(reference, actual):
        ref = np.asarray(ref, dtype=np.float64).ravel()
        act = np.asarray(act, dtype=np.float64).ravel()
        if ref.size == 0:
            continue
        diff = act - ref
        worst["max_abs"] = max(worst["max_abs"], float(np.abs(diff).max()))
        worst["rel_l2"] = max(worst["rel_l2"], float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30)))
        denom = np.linalg.norm(ref) * np.linalg.norm(act)
        cosine = float(ref @ act / denom) if denom > 0 else 1.0
        worst["cosine"] = min(worst["cosine"], cosine)
    return worst


class Pipeline:
    def __init__(self, passes: list[CompressionPass], context: Context):
        self.passes = passes
        self.context = context

    def run(self, model: ir.Model, verify_feed: dict | None = None) -> list[dict]:
        """Run every pass in place on `model`; returns the per-pass report entries."""
        reference = None
        if verify_feed is not None:
            reference = ort_session(ir.to_proto(model)).run(None, verify_feed)
        entries = []
        for index, compression_pass in enumerate(self.passes):
            self.context.pending = self.passes[index + 1 :]
            missing = [r for r in compression_pass.requires_context if getattr(self.context, r) in (None, {}, [])]
            if missing:
                raise OnnxcompError(f"pass {compression_pass.name!r} needs {missing[0]} data: pass --calib FILE "
                                    "(or --model-kind with built-in text; calibration= in the Python API)")
            ops_before, bytes_before = op_histogram(model), initializer_bytes(model)
            start = time.perf_counter()
            result = compression_pass(model)
            seconds = time.perf_counter() - start
            ops_after = op_histogram(model)
            if result.modified:  # an unchanged model was already checked
                check_model(result.model, f"model after pass {compression_pass.name!r}")
            entry = {
                "pass": compression_pass.name,
                "options": compression_pass.opts,
                "modified": bool(result.modified),
                "seconds": round(seconds, 3),
                "nodes_before": sum(ops_before.values()),
                "nodes_after": sum(ops_after.values()),
                "nodes_added": dict(sorted((ops_after - ops_before).items())),
                "nodes_removed": dict(sorted((ops_before - ops_after).items())),
                "bytes_before": bytes_before,
                "bytes_after": initializer_bytes(model),
            }
            if reference is not None:
                current = ort_session(ir.to_proto(result.model)).run(None, verify_feed)
                entry["deviation"] = output_deviation(reference, current)
            if compression_pass.details:
                entry["details"] = compression_pass.details
            entries.append(entry)
        return entries
