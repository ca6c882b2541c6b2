"""The pass manager: runs a recipe's passes in order, checks the model after each, reports.

After every pass the model is serialized and must pass the ONNX checker and strict shape
inference. With `verify`, the current model also runs in ONNX Runtime on a sample feed and
its output deviation from the original model is recorded. The report has, per pass: wall
time, nodes added/removed, initializer bytes before/after, and the deviation.
"""

import time

import onnx_ir as ir

from onnxcomp.calibration.runner import collect
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import initializer_bytes, op_histogram
from onnxcomp.ir.modelio import check_model
from onnxcomp.passes.base import CALIBRATION_HINT, CompressionPass, Context
from onnxcomp.passes.calibrate import Calibrate
from onnxcomp.runtime import ort_session, output_deviation


class Pipeline:
    """Runs passes in order. Statistics are collected in steps, one pass over the data per step:
    a `calibrate` pass starts a step holding the passes up to the next `calibrate`, and collects
    their `statistic_requests` (asked on the model as it is at that point) together. A pass with
    requests that no step serves (no `calibrate` before it, or a pass since then rewrote the model)
    gets them collected just before it runs, so every pass sees statistics of the model it rewrites."""

    def __init__(self, passes: list[CompressionPass], context: Context):
        self.passes = passes
        self.context = context

    def _step_of(self, index: int) -> list[CompressionPass]:
        """The passes a `calibrate` at `index` serves: those up to the next `calibrate`."""
        step = []
        for later in self.passes[index + 1 :]:
            if isinstance(later, Calibrate):
                break
            step.append(later)
        return step

    def run(self, model: ir.Model, verify_feed: dict | None = None) -> list[dict]:
        """Run every pass in place on `model`; returns the per-pass report entries."""
        for compression_pass in self.passes:
            compression_pass.preflight(model)
        reference = None
        if verify_feed is not None:
            try:
                reference = ort_session(ir.to_proto(model)).run(None, verify_feed)
            except Exception as exc:  # the input model itself fails on the data: one line
                text = str(exc).strip()
                raise OnnxcompError(
                    "--verify: ONNX Runtime cannot run the input model on the first calibration sample "
                    f"({text.splitlines()[0] if text else type(exc).__name__})"
                ) from None
        entries = []
        served: set[CompressionPass] = set()
        for index, compression_pass in enumerate(self.passes):
            ops_before, bytes_before = op_histogram(model), initializer_bytes(model)
            start = time.perf_counter()
            if isinstance(compression_pass, Calibrate):
                step = self._step_of(index)
                compression_pass.requests = sorted({r for p in step for r in p.statistic_requests(model)}, key=repr)
                served.update(step)
            elif compression_pass not in served:
                requests = compression_pass.statistic_requests(model)
                if requests:
                    if self.context.calibration is None:
                        raise OnnxcompError(
                            f"pass {compression_pass.name!r} needs calibration data: {CALIBRATION_HINT}"
                        )
                    self.context.statistics.update(
                        collect(model, requests, self.context.calibration, use_cache=self.context.use_cache)
                    )
            result = compression_pass(model)
            seconds = time.perf_counter() - start
            ops_after = op_histogram(model)
            if result.modified:  # an unchanged model was already checked
                check_model(result.model, f"model after pass {compression_pass.name!r}")
                served.clear()  # statistics of the step describe the model before this rewrite
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
