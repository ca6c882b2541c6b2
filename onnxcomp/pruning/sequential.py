"""Sequential recovery statistics: consumer inputs of the partly pruned model against the unpruned one.

A refit on one-shot statistics reconstructs each consumer's output from the unpruned model's inputs;
but once earlier groups are pruned, the inputs a consumer really sees have moved.
`SequentialMoments` runs the unpruned model once over the calibration data and keeps the consumer
inputs x_ref of every feed; then, each time it is asked (after the groups before have been pruned
and refit), it runs the current model and accumulates E[x xᵀ], E[x], E[x x_refᵀ], E[x_ref x_refᵀ]
and E[x_ref] for the requested tensors, so the refit maps what the pruned model computes onto what
the unpruned layer produced (like sequential GPTQ, with a cross term).

Padding positions (a feed's `attention_mask`) are left out of every statistic (`input_moments` gives
the one-shot moments the same way). A statistic may be a view of a tensor (`views`: a Conv
consumer's im2col patches, `onnxcomp.pruning.patches`), computed from the tensor on each pass.
Cost: one pass over the data per request (one per group). Memory: the kept x_ref of every feed
(float32, the tensors, not their patches) and two K × K float64 accumulators per requested key.
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


def _raw(model: ir.Model, names: list[str], views: dict, reader):
    """Per feed: {tensor name: value} for the tensors the statistic keys `names` read."""
    tensors = sorted({views.get(name, (name, None))[0] for name in names})
    session = calibration_session(bytes_with_outputs(ir.to_proto(model), tensors))
    for feed in reader:
        yield dict(zip(tensors, session.run(tensors, feed))), feed


def _view(name: str, views: dict, raw: dict, feed) -> np.ndarray:
    """The rows of statistic key `name`: a tensor's rows, or (`views`: key → (tensor, function))
    a function of the tensor, e.g. a Conv consumer's patches."""
    tensor, function = views.get(name, (name, None))
    return _rows(raw[tensor], feed) if function is None else function(raw[tensor])


def _run(model: ir.Model, names: list[str], reader, views: dict | None = None):
    views = views or {}
    for raw, feed in _raw(model, names, views, reader):
        yield [_view(name, views, raw, feed) for name in names]


def input_moments(model: ir.Model, names: list[str], reader, views: dict | None = None) -> dict[str, Moments]:
    """E[x xᵀ] and E[x] of each tensor in `names` over the calibration data, one pass, padding
    positions left out (their activations are never read, and in padded text batches they can be
    most of the rows). `views` maps a key of `names` to (tensor, function giving its rows)."""
    names = sorted(set(names))
    sums: dict[str, list] = {}
    for values in _run(model, names, reader, views):
        for name, x in zip(names, values):
            x = x.astype(np.float64)
            if name not in sums:
                sums[name] = [np.zeros((x.shape[1], x.shape[1])), np.zeros(x.shape[1]), 0]
            sums[name][0] += x.T @ x
            sums[name][1] += x.sum(axis=0)
            sums[name][2] += len(x)
    if not sums or min(count for _, _, count in sums.values()) == 0:
        raise OnnxcompError("pruning: calibration data produced no samples")
    return {name: Moments(second / count, mean / count) for name, (second, mean, count) in sums.items()}


class SequentialMoments:
    def __init__(self, model: ir.Model, names: list[str], reader, views: dict | None = None):
        self.reader, self.views = reader, views or {}
        names = sorted(set(names))
        self.reference = [raw for raw, _ in _raw(model, names, self.views, reader)]  # tensors, not patches
        if not self.reference:
            raise OnnxcompError("pruning: calibration data produced no samples")

    def moments(self, model: ir.Model, names: list[str]) -> dict[str, Moments]:
        """Moments of `names` in `model` as it is now, against the unpruned model's values."""
        names = sorted(set(names))
        sums: dict[str, list] = {}
        for reference, (raw, feed) in zip(self.reference, _raw(model, names, self.views, self.reader)):
            for name in names:
                x = _view(name, self.views, raw, feed).astype(np.float64)
                r = _view(name, self.views, reference, feed).astype(np.float64)
                if name not in sums:
                    k = x.shape[1]
                    sums[name] = [np.zeros((k, k)), np.zeros(k), np.zeros((k, k)), np.zeros((k, k)), np.zeros(k), 0]
                s = sums[name]
                s[0] += x.T @ x
                s[1] += x.sum(axis=0)
                s[2] += x.T @ r
                s[3] += r.T @ r
                s[4] += r.sum(axis=0)
                s[5] += len(x)
        return {name: Moments(*(part / max(s[5], 1) for part in s[:5])) for name, s in sums.items()}
