"""split_outliers: take a linear's few outlier input channels out of its int8 path into a float side path.

A per-tensor int8 range is set by the largest channel: one channel of MiniLM's first GELU outputs
reaches 24.7 while every other stays below 6.4, so the other 1,535 channels get a quarter of the
codes. For every group of MatMul/Gemm layers reading one activation X (`find_linear_groups`), the
top channels by calibrated |X| maximum, down to the first gap of `ratio` between consecutive maxima,
are outliers (at most `max_channels`; none without such a gap). Then, exactly:

    X · W = (X ⊙ m) · W_m  +  Gather(X, outliers) · W[outliers]

m zeroes the outlier channels and W_m is W with those rows zeroed: the int8 path (`quantize_qdq`
later) sees X ⊙ m, whose range the outliers no longer set; the side MatMul (K = the outlier
count) stays float. m is folded into the scale of an existing `Mul(X₀, c)` that feeds only the
group (SmoothQuant's inserted Mul; the side path then reads X₀ with c folded into its rows),
else an `Mul(X, m)` is inserted.

Requires: calibration ranges with per-channel maxima of each group's input (its
`statistic_requests`). Guarantees: the model computes the same function (float rounding only);
side MatMuls are `keep` in `context.precision_plan` (no int8 pass quantizes them); later passes
see new tensors (the presets calibrate again before quantizing); the report lists every split
group with its outlier channels and their maxima against the rest.
"""

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.calibration.requests import RangeRequest
from onnxcomp.ir.graph import NameAllocator, NodeFilter, add_initializer, constant_array, is_float32_activation
from onnxcomp.ir.patterns import LinearGroup, find_linear_groups
from onnxcomp.passes.base import CompressionPass
from onnxcomp.precision.plan import PrecisionPlan, Scheme


def outlier_channels(absmax: np.ndarray, max_channels: int, ratio: float) -> np.ndarray:
    """Indices (ascending) of the top j ≤ `max_channels` channels, for the smallest j whose j-th
    largest maximum exceeds `ratio` × the next one (a gap); none when no such gap exists."""
    top = np.argsort(-absmax, kind="stable")[: max_channels + 1]
    for j in range(1, min(max_channels, absmax.size - 1) + 1):
        if absmax[top[j - 1]] > ratio * absmax[top[j]]:
            return np.sort(top[:j]).astype(np.int64)
    return np.zeros(0, dtype=np.int64)


def _source(group: LinearGroup) -> tuple[ir.Value, ir.Node | None]:
    """The tensor whose channels are judged, and the scale Mul to fold the mask into: X₀ and
    `Mul(X₀, c)` when the group's input is such a Mul (c a constant [K] read once) read by the group
    only — SmoothQuant's inserted Mul, whose output has flat maxima by construction — else (X, None)."""
    mul, k = group.input.producer(), group.linears[0].k
    if mul is None or mul.op_type != "Mul" or group.input.is_graph_output():
        return group.input, None
    scale = constant_array(mul.inputs[1])
    members = {lin.node for lin in group.linears}
    if (
        scale is None
        or scale.shape != (k,)
        or len(mul.inputs[1].uses()) != 1
        or constant_array(mul.inputs[0]) is not None
        or any(u.node not in members for u in group.input.uses())
    ):
        return group.input, None
    return mul.inputs[0], mul


class SplitOutliers(CompressionPass):
    name = "split_outliers"
    options = {"max_channels": 4, "ratio": 2.0, "exclude": []}
    needs_calibration = True

    def validate_options(self) -> None:
        o = self.opts
        if isinstance(o["max_channels"], bool) or not isinstance(o["max_channels"], int) or o["max_channels"] < 1:
            raise self.fail(f"max_channels must be a positive integer, not {o['max_channels']!r}")
        if isinstance(o["ratio"], bool) or not isinstance(o["ratio"], (int, float)) or o["ratio"] <= 1:
            raise self.fail(f"ratio must be a number above 1, not {o['ratio']!r}")

    def _groups(self, model: ir.Model) -> list[LinearGroup]:
        node_filter = NodeFilter(self.opts["exclude"])
        node_filter.check_all_match(model)
        plan = self.context.precision_plan
        return [
            group
            for group in find_linear_groups(model)
            if not group.problems
            and is_float32_activation(group.input)
            and all(lin.plain and lin.is_matrix and not node_filter.excludes(lin.node) for lin in group.linears)
            and not (plan and any(plan.scheme_for(lin.node).kind == "keep" for lin in group.linears))
        ]

    def statistic_requests(self, model: ir.Model) -> list[RangeRequest]:
        return sorted({RangeRequest(_source(group)[0].name) for group in self._groups(model)})

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o = self.opts
        names = NameAllocator(model.graph)
        plan = self.context.precision_plan or PrecisionPlan(Scheme("blockwise", 8, 128, True))
        split, groups = [], self._groups(model)
        for group in groups:
            absmax = self.context.statistics.ranges[_source(group)[0].name].channel_absmax
            if absmax is None or absmax.shape != (group.linears[0].k,):
                continue
            idx = outlier_channels(absmax, o["max_channels"], float(o["ratio"]))
            if idx.size:
                for side in self._split(model.graph, names, group, idx):
                    plan.nodes[side] = Scheme("keep")
                rest = np.delete(absmax, idx)
                split.append(
                    {
                        "group": group.name,
                        "channels": idx.tolist(),
                        "channel_max": [round(float(absmax[i]), 4) for i in idx],
                        "largest_other_max": round(float(rest.max()), 4),
                    }
                )
        if split:
            self.context.precision_plan = plan
            TopologicalSortPass()(model)
        self.details = {"groups": len(groups), "split": split}
        return ir.passes.PassResult(model, modified=bool(split))

    def _split(self, graph: ir.Graph, names: NameAllocator, group: LinearGroup, idx: np.ndarray) -> list[ir.Node]:
        """Rewrite the group as (X ⊙ m)·W_m + Gather(X, idx)·W[idx]; returns the side MatMuls."""
        k = group.linears[0].k
        mask = np.ones(k, dtype=np.float32)
        mask[idx] = 0.0
        source, scale_mul = _source(group)
        fold = np.ones(k, dtype=np.float32)
        if scale_mul is not None:  # X = X₀ · c: m folds into c, the side path reads X₀ with c in its rows
            fold = constant_array(scale_mul.inputs[1]).astype(np.float32)
            scale_mul.inputs[1].const_value = ir.tensor(fold * mask, name=scale_mul.inputs[1].name)
        else:
            masked = ir.node(
                "Mul", [group.input, add_initializer(graph, names.new(f"{source.name}_outlier_mask"), mask)]
            )
            masked.name = names.new(f"{source.name}_outlier_mask_Mul")
            masked.outputs[0].name = names.new(f"{source.name}_masked")
            masked.outputs[0].dtype, masked.outputs[0].shape = group.input.dtype, group.input.shape
            graph.append(masked)
            for lin in group.linears:
                lin.node.replace_input_with(0, masked.outputs[0])
        gather = ir.node(
            "Gather", [source, add_initializer(graph, names.new(f"{source.name}_outlier_idx"), idx)], {"axis": -1}
        )
        gather.name = names.new(f"{source.name}_outliers")
        gather.outputs[0].name = names.new(f"{source.name}_outliers")
        gather.outputs[0].dtype = source.dtype
        graph.append(gather)
        sides = []
        for lin in group.linears:
            w = lin.weight_kn()
            rows = (w[idx] * fold[idx, None]).astype(np.float32)
            kept = w.copy()
            kept[idx] = 0.0
            lin.weight.const_value = ir.tensor(lin.from_kn(kept), name=lin.weight.name)
            lin.release()
            side = ir.node(
                "MatMul", [gather.outputs[0], add_initializer(graph, names.new(f"{lin.name}_outlier_rows"), rows)]
            )
            side.name = names.new(f"{lin.name}_outlier_side")
            side.outputs[0].name = names.new(f"{lin.name}_outlier_side")
            output = lin.node.outputs[0]  # before a bias Add: ONNX Runtime still fuses it (BiasGelu, SkipLayerNorm)
            side.outputs[0].dtype = output.dtype
            total = ir.node("Add", [output, side.outputs[0]])
            total.name = names.new(f"{lin.name}_outlier_add")
            total.outputs[0].name = names.new(f"{output.name}_with_outliers")
            total.outputs[0].dtype, total.outputs[0].shape = output.dtype, output.shape
            for use in output.uses():
                if use.node is not total:
                    use.node.replace_input_with(use.idx, total.outputs[0])
            if output.is_graph_output():  # the sum takes the output's place and name
                name = output.name
                output.name = names.new(f"{name}_int8_path")
                total.outputs[0].name = name
                graph.outputs[graph.outputs.index(output)] = total.outputs[0]
            graph.extend([side, total])
            sides.append(side)
        return sides

    @classmethod
    def summary(cls, details: dict) -> str | None:
        split = details["split"]
        if not split:
            return f"split_outliers: no outlier input channels in {details['groups']} linear groups"
        channels = sum(len(s["channels"]) for s in split)
        return (
            f"split_outliers: {channels} outlier input channels of {len(split)} of {details['groups']} linear groups "
            "moved to float side paths"
        )
