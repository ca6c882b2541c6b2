"""smoothquant: fold per-channel scales that move activation outliers into the weights.

For every group of linears reading one activation X (Q/K/V, gate/up, …), with calibrated
per-channel maxima a_j of X and weight maxima w_j over the group's input rows:
s_j = a_j^α / w_j^(1−α); X/s is folded into X's producer and s into every linear's weight rows.
Producers (see onnxcomp.ir.patterns): a norm's gamma/beta, or a linear layer's output
channels through a channel-preserving path (V → attention → O, up → gated product → down).
A group without such a producer gets an explicit `Mul(X, 1/s)` in front of its linears when
`fallback` is "mul", or is left alone and reported when it is "skip".
α is a number in [0, 1] or "auto": per group, the α on a 0.05 grid whose simulated W8A8 output
error on calibration rows of X is smallest.

Requires: calibration data; per-channel maxima of each group input (and, for α = auto, calibration
rows of it), requested from the pass manager and collected in one pass over the data. Guarantees:
in exact arithmetic the model computes the same function; in float32 the outputs move by rounding
only (tests bound the relative error by 1e-4 on MiniLM and SmolLM2). Statistics of a smoothed
tensor change: the presets measure again (a second `calibrate`) before quantizing, and the pass
manager re-collects for any later pass of the same step.
"""

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.algorithms.smoothing import producer_scales, search_alpha
from onnxcomp.calibration.requests import RangeRequest, Request, RowsRequest
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.folding import FALLBACKS, fold_scales, group_weights, producer_channels
from onnxcomp.ir.graph import NameAllocator, NodeFilter
from onnxcomp.ir.patterns import LinearGroup, find_linear_groups
from onnxcomp.passes.base import CompressionPass


def _summary(values: np.ndarray) -> dict:
    return {"max": round(float(np.max(values)), 6), "median": round(float(np.median(values)), 6)}


class SmoothQuant(CompressionPass):
    name = "smoothquant"
    options = {"alpha": 0.5, "fallback": "skip", "exclude": [], "samples": 256}
    needs_calibration = True

    def validate_options(self) -> None:
        alpha = self.opts["alpha"]
        if alpha != "auto" and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1):
            raise OnnxcompError(f"pass 'smoothquant': alpha must be a number in [0, 1] or 'auto', not {alpha!r}")
        if self.opts["fallback"] not in FALLBACKS:
            raise OnnxcompError(
                f"pass 'smoothquant': fallback must be one of {', '.join(FALLBACKS)}, not {self.opts['fallback']!r}"
            )
        exclude = self.opts["exclude"]
        if not isinstance(exclude, list) or not all(isinstance(p, str) for p in exclude):
            raise OnnxcompError(
                f"pass 'smoothquant': exclude must be a list of op types or node-name globs, not {exclude!r}"
            )
        if not isinstance(self.opts["samples"], int) or self.opts["samples"] < 1:
            raise OnnxcompError(f"pass 'smoothquant': samples must be a positive integer, not {self.opts['samples']!r}")

    # -- planning ------------------------------------------------------------------------
    def _plan(self, model: ir.Model) -> tuple[list[LinearGroup], list[dict]]:
        """(groups to smooth, [{linears, reason}] for the groups left alone)."""
        node_filter = NodeFilter(self.opts["exclude"])
        node_filter.check_all_match(model)
        chosen, skipped = [], []
        for group in find_linear_groups(model):
            reason = "; ".join(group.problems)
            excluded = [lin.name for lin in group.linears if node_filter.excludes(lin.node)]
            if excluded:
                reason = f"excluded: {excluded[0]}"
            elif not reason and group.producer is None and self.opts["fallback"] == "skip":
                reason = group.reason
            if reason:
                skipped.append({"linears": [lin.name for lin in group.linears], "reason": reason})
            else:
                chosen.append(group)
        return chosen, skipped

    def statistic_requests(self, model: ir.Model) -> list[Request]:
        """Per-channel maxima of each group input, and calibration rows of it for the α search."""
        inputs = [group.input.name for group in self._plan(model)[0]]
        rows = [RowsRequest(name, self.opts["samples"]) for name in inputs] if self.opts["alpha"] == "auto" else []
        return [RangeRequest(name) for name in inputs] + rows

    def requires(self, model: ir.Model) -> None:
        super().requires(model)  # every request answered; the maxima must also be per channel
        for request in self.statistic_requests(model):
            stats = self.context.statistics.ranges.get(request.tensor) if isinstance(request, RangeRequest) else None
            if stats is not None and stats.channel_absmax is None:
                raise self.fail(f"calibration statistics of tensor {request.tensor!r} have no per-channel maxima")

    @classmethod
    def summary(cls, details: dict) -> str | None:
        smoothed = details.get("smoothed")
        if smoothed is None:
            return None
        left = details["not_smoothed"]
        return f"smoothquant: {len(smoothed)} linear groups smoothed, {len(left)} left as they were" + (
            f" (first: {left[0]['reason']}; all in --report)" if left else ""
        )

    # -- rewriting -----------------------------------------------------------------------
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        groups, skipped = self._plan(model)
        stats = self.context.statistics

        names = NameAllocator(model.graph)
        smoothed = []
        for group in groups:
            entry = self._smooth(
                model.graph,
                names,
                group,
                stats.ranges[group.input.name].channel_absmax,
                stats.rows.get((group.input.name, self.opts["samples"])),
            )
            (skipped if "reason" in entry else smoothed).append(entry)
        if any(entry["producer"] == "inserted Mul" for entry in smoothed):
            TopologicalSortPass()(model)
        self.details = {"smoothed": smoothed, "not_smoothed": skipped}
        if not smoothed:
            self.details["note"] = "no linear group was smoothed (reasons under not_smoothed)"
        return ir.passes.PassResult(model, modified=bool(smoothed))

    def _smooth(self, graph, names, group: LinearGroup, act_absmax, rows) -> dict:
        weights = group_weights(group)
        weight_absmax = np.abs(weights).max(axis=1)
        k = len(weight_absmax)
        if act_absmax.shape != (k,):
            raise self.fail(f"statistics of {group.input.name!r} have {act_absmax.shape[0]} channels, the linears {k}")
        channel_map, width = producer_channels(group)

        def scales_for(alpha):
            return producer_scales(act_absmax, weight_absmax, channel_map, width, alpha)[channel_map]

        entry = {"linears": [lin.name for lin in group.linears], "input": group.input.name}
        if self.opts["alpha"] == "auto":
            alpha, errors = search_alpha(rows, weights, act_absmax, scales_for)
            entry["search_error"] = {
                "best": round(errors[alpha], 6),
                "at_0.5": round(errors[0.5], 6),
                "unsmoothed": round(errors[None], 6),
            }
            if alpha is None:
                entry["reason"] = "alpha search: no alpha lowers the simulated W8A8 output error"
                return entry
        else:
            alpha = float(self.opts["alpha"])
        t = producer_scales(act_absmax, weight_absmax, channel_map, width, alpha)
        s = t[channel_map]

        entry["producer"] = fold_scales(graph, names, group, t)
        if group.producer is None:
            entry["why_no_fold"] = group.reason
        entry.update(
            {
                "alpha": alpha,
                "activation_absmax_before": _summary(act_absmax),
                "activation_absmax_after": _summary(act_absmax / s),
                "weight_absmax_before": _summary(weight_absmax),
                "weight_absmax_after": _summary(weight_absmax * s),
            }
        )
        return entry
