"""quantize_weight_only_awq: int4/int8 blockwise weights after activation-aware scaling (AWQ).

For every group of linears reading one activation X (Q/K/V, O, gate/up, down) whose producer can
absorb a per-channel scale (`onnxcomp.transformer_patterns`: a norm, or a producer linear through
a channel-preserving path), the scale s = mean|X|^α is searched on a grid of α by the group's
quantized output error on calibration rows (`onnxcomp.awq`) and folded in: s into the group's
weight rows, 1/s into the producer (`onnxcomp.scale_folding`). Groups without a foldable producer
are quantized unscaled (or, with `fallback: mul`, get an explicit Mul), and the report says why;
so are LM heads tied to the embedding table, which then stays stored once.
Then every weight is quantized by RTN with, when `clip_search` is on, each block's clipping ratio
chosen by the output error on the same rows. Targets, formats, the LM-head bit rule and the
report are shared with the other weight-only passes (`onnxcomp.weight_only`).

With `scale_only` the scaled weights stay float for a following pass (recipe w4a16-awq-gptq:
AWQ scales, then GPTQ codes).

Requires: calibration data (`--calib`, or `calibration=` in the API; a model kind with built-in
text). Guarantees: before quantization the scaled model computes the same function (float
rounding only); per group the chosen α has a simulated output error no larger than plain RTN's
(α = 0); the report lists per layer α, what absorbed the scale, and the relative output error on
the calibration rows for AWQ and for RTN.
"""

import numpy as np
import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.awq import quantize_with_clipping, relative_output_error, search_alpha
from onnxcomp.blockwise import dequantize_blockwise, quantize_blockwise
from onnxcomp.calibration.runner import collect_row_samples
from onnxcomp.graph import NameAllocator
from onnxcomp.progress import progress
from onnxcomp.scale_folding import fold_scales, producer_channels, rows_by_input_channel
from onnxcomp.transformer_patterns import LinearGroup, find_linear_groups
from onnxcomp.weight_only import COMMON_OPTIONS, WeightOnlyPass, as_kn_weight, row_gather_tables, tied_table

FALLBACKS = ("skip", "mul")


class QuantizeWeightOnlyAWQ(WeightOnlyPass):
    name = "quantize_weight_only_awq"
    algorithm = "awq"
    options = {**COMMON_OPTIONS, "algorithm": "awq", "clip_search": True, "samples": 512, "fallback": "skip", "scale_only": False}
    requires_context = ("calibration",)

    def validate_options(self) -> None:
        super().validate_options()
        if not isinstance(self.opts["samples"], int) or isinstance(self.opts["samples"], bool) or self.opts["samples"] < 16:
            raise self.fail(f"samples must be an integer ≥ 16 (calibration rows per layer input), not {self.opts['samples']!r}")
        if self.opts["fallback"] not in FALLBACKS:
            raise self.fail(f"fallback must be one of {', '.join(FALLBACKS)}, not {self.opts['fallback']!r}")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.require_calibration()
        targets, skipped = self.targets(model)
        if not targets:
            return self.finish(model, [], skipped, 0)
        rows = collect_row_samples(model, [node.inputs[0].name for node, _ in targets], self.context.calibration,
                                   self.opts["samples"])
        input_of = {id(node): node.inputs[0].name for node, _ in targets}  # before an inserted Mul renames it
        names = NameAllocator(model.graph)
        scaled, unscaled, groups_scaled, alphas = {}, [], 0, {}  # id(node) → (s, α, what absorbed 1/s); [{linears, reason}]
        tables = row_gather_tables(model)
        for group in progress(find_linear_groups(model), desc="AWQ scale search", unit="group"):
            reason = self._why_not_scaled(group, targets, tables)
            if reason:
                unscaled.append({"linears": [lin.name for lin in group.linears], "reason": reason})
                continue
            x = rows[group.input.name]
            channel_map, width = producer_channels(group)
            members = [(rows_by_input_channel(lin), self.bits_for(lin.node), self.symmetric_for(lin.node)) for lin in group.linears]
            alpha, t, errors = search_alpha(x, members, channel_map, width, self.opts["group_size"],
                                            signed_scales=self.signed_scales)
            if alpha == 0.0:
                unscaled.append({"linears": [lin.name for lin in group.linears], "reason": "alpha search chose 0 (no scaling)"})
                continue
            absorbed_by = fold_scales(model.graph, names, group, t)
            groups_scaled += 1
            for lin in group.linears:
                scaled[id(lin.node)] = (t[channel_map], alpha, absorbed_by)
                alphas[lin.name] = float(alpha)
        if any(entry[2] == "inserted Mul" for entry in scaled.values()):
            TopologicalSortPass()(model)
        if self.opts["scale_only"]:  # a later pass (GPTQ) quantizes the scaled weights
            self.details = {"scale_only": True, "groups_scaled": groups_scaled, "groups_not_scaled": unscaled,
                            "alphas": alphas}
            return ir.passes.PassResult(model, modified=bool(groups_scaled))

        quantized, layers = {}, []
        for node, original in progress(targets, desc="AWQ quantize", unit="linear"):
            weight = as_kn_weight(node)[0]  # re-read: scaling changed it
            s, alpha, absorbed_by = scaled.get(id(node), (None, 0.0, None))
            x_original = rows[input_of[id(node)]]
            x = x_original if s is None else x_original / s.astype(np.float32)
            bits, symmetric = self.bits_for(node), self.symmetric_for(node)
            key = (id(node.inputs[1]), bits)
            if key not in quantized:
                if self.opts["clip_search"]:
                    q = quantize_with_clipping(weight, x, bits, self.opts["group_size"], symmetric, self.signed_scales)
                else:
                    q = quantize_blockwise(weight, bits, self.opts["group_size"], symmetric, signed_scales=self.signed_scales)
                quantized[key] = (q, {})
            q, stored = quantized[key]
            rtn = dequantize_blockwise(quantize_blockwise(original, q.bits, q.group, q.symmetric, signed_scales=self.signed_scales))
            layers.append({**self.layer_report(node, weight, q), "alpha": float(alpha), "scale_absorbed_by": absorbed_by,
                           "relative_output_error": round(relative_output_error(x, weight, dequantize_blockwise(q)), 6),
                           "relative_output_error_rtn": round(relative_output_error(x_original, original, rtn), 6)})
            self.emit(model.graph, names, node, q, stored)
        return self.finish(model, layers, skipped, len(quantized), groups_not_scaled=unscaled,
                           groups_scaled=groups_scaled)

    def _why_not_scaled(self, group: LinearGroup, targets, tables) -> str:
        target_ids = {id(node) for node, _ in targets}
        if any(id(lin.node) not in target_ids for lin in group.linears):
            return "a linear of the group is not quantized (excluded or skipped)"
        for lin in group.linears:
            table = tied_table(rows_by_input_channel(lin), tables)
            if table:
                return f"weight of {lin.name} is tied to the embedding table {table!r}: scaling it would store the table twice"
        if group.problems:
            return "; ".join(group.problems)
        if group.producer is None and self.opts["fallback"] == "skip":
            return group.reason
        return ""
