"""calibrate: record activation statistics by streaming calibration data through ONNX Runtime.

An analysis step: keeps bounded statistics (min/max, |x| histogram, per-channel max) of every
tensor that a later pass names in `statistics_needed`, for the passes up to the next `calibrate`
(which re-measures what a rewrite in between, such as smoothquant, has changed).
Requires: calibration data. Guarantees: the graph is unchanged.
"""

import onnx_ir as ir

from onnxcomp.calibration import collect_statistics
from onnxcomp.passbase import CompressionPass


class Calibrate(CompressionPass):
    name = "calibrate"
    requires_context = ("calibration",)

    @staticmethod
    def _served(pending: list[CompressionPass]) -> list[CompressionPass]:
        """The later passes up to the next calibrate, which serves the ones after it."""
        served = []
        for later in pending:
            if later.name == "calibrate":
                break
            served.append(later)
        return served

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        needed = sorted({name for later in self._served(self.context.pending) for name in later.statistics_needed(model)})
        stats = collect_statistics(model, needed, self.context.calibration, use_cache=self.context.use_cache)
        self.context.statistics.update(stats)
        self.details = {"tensors": len(stats), "values_per_tensor": max((s.count for s in stats.values()), default=0)}
        return ir.passes.PassResult(model, modified=False)
