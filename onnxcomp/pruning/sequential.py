"""Sequential recovery statistics: consumer inputs of the partly pruned model against the unpruned one.

A refit on one-shot statistics reconstructs each consumer's output from the unpruned model's inputs;
but once earlier groups are pruned, the inputs a consumer really sees have moved.
`SequentialMoments` runs the unpruned model once over the calibration data and keeps the consumer
inputs x_ref of every feed; then, each time it is asked (after the groups before have been pruned
and refit), it runs the current model and accumulates E[x xᵀ], E[x], E[x x_refᵀ], E[x_ref x_refᵀ]
and E[x_ref] for the requested tensors, so the refit maps what the pruned model computes onto what
the unpruned layer produced (like sequential GPTQ, with a cross term).

Padding positions (a feed's `attention_mask`) are left out of every statistic (`input_moments` gives
the one-shot moments the same way). Cost: one pass over the data per request (one per group).
Memory: the kept x_ref of every feed (float32, rows × K per tensor) and two K × K float64
accumulators per requested tensor.
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.algorithms.refit import Moments
from onnxcomp.calibration.runner import bytes_with_outputs
from onnxcomp.errors import OnnxcompError
from onnxcomp.runtime import calibration_session


def _rows(value: np.ndarray, feed: dict) -> np.ndarray:
    """The rows [n, K] of a [..., K] value, without the positions the feed's `attention_mask`
    [batch, sequence] marks as padding (when the value's first two axes are those)."""
    value = np.asarray(value, dtype=np.float32)
    mask = feed.get("attention_mask") if isinstance(feed, dict) else None
    if mask is not None and np.ndim(mask) == 2 and value.ndim >= 3 and value.shape[:2] == np.shape(mask):
        value = value[np.asarray(mask).astype(bool)]
    return value.reshape(-1, value.shape[-1])


def _run(model: ir.Model, names: list[str], reader):
    session = calibration_session(bytes_with_outputs(ir.to_proto(model), names))
    for feed in reader:
        yield [_rows(v, feed) for v in session.run(names, feed)]


def input_moments(model: ir.Model, names: list[str], reader) -> dict[str, Moments]:
    """E[x xᵀ] and E[x] of each tensor in `names` over the calibration data, one pass, padding
    positions left out (their activations are never read, and in padded text batches they can be
    most of the rows)."""
    names = sorted(set(names))
    sums: dict[str, list] = {}
    rows = 0
    for values in _run(model, names, reader):
        for name, x in zip(names, values):
            x = x.astype(np.float64)
            if name not in sums:
                sums[name] = [np.zeros((x.shape[1], x.shape[1])), np.zeros(x.shape[1])]
            sums[name][0] += x.T @ x
            sums[name][1] += x.sum(axis=0)
        rows += len(values[0]) if values else 0
    if rows == 0:
        raise OnnxcompError("pruning: calibration data produced no samples")
    return {name: Moments(second / rows, mean / rows) for name, (second, mean) in sums.items()}


class SequentialMoments:
    def __init__(self, model: ir.Model, names: list[str], reader):
        self.reader = reader
        names = sorted(set(names))
        self.reference = [dict(zip(names, values)) for values in _run(model, names, reader)]
        if not self.reference:
            raise OnnxcompError("pruning: calibration data produced no samples")

    def moments(self, model: ir.Model, names: list[str]) -> dict[str, Moments]:
        """Moments of `names` in `model` as it is now, against the unpruned model's values."""
        names = sorted(set(names))
        sums: dict[str, list] = {}
        rows = 0
        for reference, values in zip(self.reference, _run(model, names, self.reader)):
            for name, x in zip(names, values):
                x, r = x.astype(np.float64), reference[name].astype(np.float64)
                if name not in sums:
                    k = x.shape[1]
                    sums[name] = [np.zeros((k, k)), np.zeros(k), np.zeros((k, k)), np.zeros((k, k)), np.zeros(k)]
                s = sums[name]
                s[0] += x.T @ x
                s[1] += x.sum(axis=0)
                s[2] += x.T @ r
                s[3] += r.T @ r
                s[4] += r.sum(axis=0)
            rows += len(values[0]) if values else 0
        return {name: Moments(*(part / max(rows, 1) for part in s)) for name, s in sums.items()}
