"""calibrate: collect the statistics of a step by streaming calibration data through ONNX Runtime once.

An analysis step: the pass manager hands it the statistic requests of the passes up to the next
`calibrate` (ranges and histograms, per-channel maxima, row samples, Gram matrices; see
`onnxcomp.calibration.requests`), asked on the model as it is here; it answers them all in one
pass over the data and stores the answers in the context. A second `calibrate` re-measures what a
rewrite in between (such as smoothquant) has changed.
Requires: calibration data. Guarantees: the graph is unchanged.
"""

import onnx_ir as ir

from onnxcomp.calibration.requests import Request, RowsRequest
from onnxcomp.calibration.runner import collect
from onnxcomp.passes.base import CompressionPass


class Calibrate(CompressionPass):
    name = "calibrate"
    needs_calibration = True

    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        self.requests: list[Request] = []  # set by the pass manager: what the step's passes asked for

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        stats = collect(model, self.requests, self.context.calibration, use_cache=self.context.use_cache)
        self.context.statistics.update(stats)
        self.details = {
            "tensors": len(stats.ranges),
            "values_per_tensor": max((s.count for s in stats.ranges.values()), default=0),
        }
        rows = sorted({r.tensor for r in self.requests if isinstance(r, RowsRequest)})
        if rows:
            self.details["row_sampled_tensors"] = len(rows)
        return ir.passes.PassResult(model, modified=False)
