"""quantize_weight_only_awq: int4/int8 blockwise weights after activation-aware scaling (AWQ).

For every group of linears reading one activation X (Q/K/V, O, gate/up, down) whose producer can
absorb a per-channel scale (`onnxcomp.ir.patterns`: a norm, or a producer linear through
a channel-preserving path), the scale s = mean|X|^α is searched on a grid of α by the group's
quantized output error on calibration rows (`onnxcomp.algorithms.awq`) and folded in: s into the group's
weight rows, 1/s into the producer (`onnxcomp.ir.folding`). Groups without a foldable producer
are quantized unscaled (or, with `fallback: mul`, get an explicit Mul), and the report says why;
so are LM heads tied to the embedding table, which then stays stored once.
Then every weight is quantized by RTN with, when `clip_search` is on, each block's clipping ratio
chosen by the output error on the same rows. Targets, formats, the LM-head bit rule and the
report are shared with the other weight-only passes (`onnxcomp.passes.weight_only_base`).

With `scale_only` the scaled weights stay float for a following pass (recipe w4a16-awq-gptq:
AWQ scales, then GPTQ codes).

Requires: calibration data (`--calib`, or `calibration=` in the API; a model kind with built-in
text). Guarantees: before quantization the scaled model computes the same function (float
rounding only); per group the chosen α has a simulated output error no larger than plain RTN's
(α = 0); the report lists per layer α, what absorbed the scale, and the relative output error on
the calibration rows for AWQ and for RTN.
"""

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.algorithms.awq import quantize_with_clipping, relative_output_error, search_alpha
from onnxcomp.algorithms.blockwise import dequantize_blockwise, quantize_blockwise
from onnxcomp.calibration.requests import RowsRequest
from onnxcomp.ir.folding import fold_scales, producer_channels
from onnxcomp.ir.graph import NameAllocator
from onnxcomp.ir.patterns import LinearGroup, find_linear_groups, row_gather_tables, tied_table
from onnxcomp.passes.weight_only_base import COMMON_OPTIONS, WeightOnlyPass
from onnxcomp.progress import progress


class QuantizeWeightOnlyAWQ(WeightOnlyPass):
    name = "quantize_weight_only_awq"
    algorithm = "awq"
    options = {
        **COMMON_OPTIONS,
        "algorithm": "awq",
        "clip_search": True,
        "samples": 512,
        "fallback": "skip",
        "scale_only": False,
    }
    needs_calibration = True

    def validate_options(self) -> None:
        super().validate_options()
        if (
            not isinstance(self.opts["samples"], int)
            or isinstance(self.opts["samples"], bool)
            or self.opts["samples"] < 16
        ):
            raise self.fail(
                f"samples must be an integer ≥ 16 (calibration rows per layer input), not {self.opts['samples']!r}"
            )

    def statistic_requests(self, model: ir.Model) -> list[RowsRequest]:
        targets, _ = self.targets(model)
        return [RowsRequest(linear.node.inputs[0].name, self.opts["samples"]) for linear in targets]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        targets, skipped = self.targets(model)
        if not targets:
            return self.finish(model, [], skipped, 0)
        samples = self.opts["samples"]
        rows = {linear: self.context.statistics.rows[(linear.node.inputs[0].name, samples)] for linear in targets}
        originals = {linear: linear.weight_kn() for linear in targets}  # before scaling changes them
        names = NameAllocator(model.graph)
        scaled: dict[ir.Node, tuple] = {}  # node → (s, α, what absorbed 1/s)
        unscaled, groups_scaled, alphas = [], 0, {}  # [{linears, reason}]
        tables = row_gather_tables(model)
        target_nodes = {linear.node for linear in targets}
        for group in progress(find_linear_groups(model), desc="AWQ scale search", unit="group"):
            reason = self._why_not_scaled(group, target_nodes, tables)
            if reason:
                unscaled.append({"linears": [lin.name for lin in group.linears], "reason": reason})
                continue
            x = self.context.statistics.rows[(group.input.name, samples)]
            channel_map, width = producer_channels(group)
            schemes = [self.scheme_for(lin) for lin in group.linears]
            members = [(lin.weight_kn(), scheme.bits, scheme.symmetric) for lin, scheme in zip(group.linears, schemes)]
            alpha, t, errors = search_alpha(
                x, members, channel_map, width, schemes[0].group, signed_scales=self.signed_scales
            )
            if alpha == 0.0:
                unscaled.append(
                    {"linears": [lin.name for lin in group.linears], "reason": "alpha search chose 0 (no scaling)"}
                )
                continue
            absorbed_by = fold_scales(model.graph, names, group, t)
            groups_scaled += 1
            for lin in group.linears:
                scaled[lin.node] = (t[channel_map], alpha, absorbed_by)
                alphas[lin.name] = float(alpha)
        if any(entry[2] == "inserted Mul" for entry in scaled.values()):
            TopologicalSortPass()(model)
        if self.opts["scale_only"]:  # a later pass (GPTQ) quantizes the scaled weights
            self.details = {
                "scale_only": True,
                "groups_scaled": groups_scaled,
                "groups_not_scaled": unscaled,
                "alphas": alphas,
            }
            return ir.passes.PassResult(model, modified=bool(groups_scaled))

        quantized, layers = {}, []
        for linear in progress(targets, desc="AWQ quantize", unit="linear"):
            weight, original = linear.weight_kn(), originals[linear]  # re-read: scaling changed it
            s, alpha, absorbed_by = scaled.get(linear.node, (None, 0.0, None))
            x_original = rows[linear]
            x = x_original if s is None else x_original / s.astype(np.float32)
            scheme = self.scheme_for(linear)
            key = (linear.weight, scheme)
            if key not in quantized:
                if self.opts["clip_search"]:
                    q = quantize_with_clipping(
                        weight, x, scheme.bits, scheme.group, scheme.symmetric, self.signed_scales
                    )
                else:
                    q = quantize_blockwise(
                        weight, scheme.bits, scheme.group, scheme.symmetric, signed_scales=self.signed_scales
                    )
                quantized[key] = (q, {})
            q, stored = quantized[key]
            rtn = dequantize_blockwise(
                quantize_blockwise(original, q.bits, q.group, q.symmetric, signed_scales=self.signed_scales)
            )
            layers.append(
                {
                    **self.layer_report(linear, weight, q),
                    "alpha": float(alpha),
                    "scale_absorbed_by": absorbed_by,
                    "relative_output_error": round(relative_output_error(x, weight, dequantize_blockwise(q)), 6),
                    "relative_output_error_rtn": round(relative_output_error(x_original, original, rtn), 6),
                }
            )
            self.emit(model.graph, names, linear, q, stored)
        return self.finish(
            model, layers, skipped, len(quantized), groups_not_scaled=unscaled, groups_scaled=groups_scaled
        )

    def _why_not_scaled(self, group: LinearGroup, target_nodes: set[ir.Node], tables) -> str:
        if any(lin.node not in target_nodes for lin in group.linears):
            return "a linear of the group is not quantized (excluded or skipped)"
        for lin in group.linears:
            table = tied_table(lin.weight_kn(), tables)
            if table:
                return (
                    f"weight of {lin.name} is tied to the embedding table {table!r}: "
                    "scaling it would store the table twice"
                )
        if group.problems:
            return "; ".join(group.problems)
        if group.producer is None and self.opts["fallback"] == "skip":
            return group.reason
        return ""
