"""quantize_weight_only_gptq: int4/int8 blockwise weights chosen by GPTQ; activations stay float.

Same rewrite, formats (`matmulnbits`, `qdq`, `custom`: the shared emitter), layout and report as
`quantize_weight_only`, but the codes come from GPTQ (`onnxcomp.algorithms.gptq`): each weight is
quantized row by row along K with its rounding error pushed onto the rows not yet quantized,
weighted by the inverse of H = 2XᵀX/rows of its calibration inputs X (dampening `damp`, optional
`act_order`, lazy updates in blocks of `block` rows; group scales
`static_groups` from the original weight or taken lazily from the updated one; optional
`clip_search` of each group's range by its output error). Weights that read the same input (Q/K/V,
gate/up) share its Hessian and are quantized as one matrix.

Sequential (`sequential: true`, the default, as in the paper): the linears' inputs are grouped into
stages in topological order (in a decoder block: q/k/v, o, gate/up, down; then the LM head), and
the Hessians of a stage are streamed through ONNX Runtime from the model in which every earlier
stage's weights already hold their quantized-then-dequantized values, so each layer compensates
the error of the layers before it. Each stage runs only the subgraph from the values cached at the
previous stage boundary (`onnxcomp.calibration.staged.StagedHessians`: staged Grams cannot be
collected up front, so this pass drives their collection instead of declaring statistic requests);
with `sequential: false` the same stages run on the unmodified model (every H from the float model,
as a one-shot collection gives).

Requires: calibration data (`--calib`, or `calibration=` in the API; a model kind with built-in
text), iterated once; every quantized linear's input must be a float tensor. Guarantees: the
stored codes, scales and zero points use RTN's layout and formats; with `static_groups` the scales
and zero points are RTN's (on the original weight) and only the codes differ. The report adds per
layer `relative_output_error` (tr(ΔWᵀHΔW)/tr(WᵀHW), H from the layer's stage) for GPTQ and for RTN,
and the number of stages. Memory: one stage's Hessians and subgraph, and the stage boundary's
tensors for every calibration feed (peak RSS per model: `benchmarks/int4_smollm2.py`).
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.algorithms.blockwise import BlockQuantized, dequantize_blockwise, quantize_blockwise
from onnxcomp.algorithms.gptq import gptq_quantize, hessian_errors
from onnxcomp.calibration.staged import StagedHessians
from onnxcomp.ir.graph import NameAllocator
from onnxcomp.ir.linears import Linear
from onnxcomp.passes.weight_only_base import COMMON_OPTIONS, WeightOnlyPass
from onnxcomp.progress import progress


class QuantizeWeightOnlyGPTQ(WeightOnlyPass):
    name = "quantize_weight_only_gptq"
    algorithm = "gptq"
    options = {
        **COMMON_OPTIONS,
        "algorithm": "gptq",
        "damp": 0.01,
        "act_order": False,
        "block": 128,
        "sequential": True,
        "static_groups": True,
        "clip_search": False,
    }
    needs_calibration = True  # staged Grams: collected stage by stage by the pass itself (see the module doc)

    def validate_options(self) -> None:
        super().validate_options()
        o = self.opts
        if isinstance(o["damp"], bool) or not isinstance(o["damp"], (int, float)) or not 0 <= o["damp"] < 1:
            raise self.fail(f"damp must be a number in [0, 1), not {o['damp']!r}")
        if isinstance(o["block"], bool) or not isinstance(o["block"], int) or o["block"] < 1:
            raise self.fail(f"block must be a positive integer, not {o['block']!r}")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        targets, skipped = self.targets(model)
        if not targets:
            return self.finish(model, [], skipped, 0)
        scheme_of = {linear: self.scheme_for(linear) for linear in targets}
        staged = StagedHessians(model, [linear.node.inputs[0].name for linear in targets], self.context.calibration)
        stage_of = {name: i for i, names in enumerate(staged.stages) for name in names}
        position = {node: i for i, node in enumerate(graph)}
        # A weight read by several MatMuls is quantized once, with the H of its reader in the earliest stage.
        first_reader: dict = {}
        readers: dict = {}
        for linear in sorted(targets, key=lambda lin: (stage_of[lin.node.inputs[0].name], position[lin.node])):
            key = (linear.weight, scheme_of[linear])
            first_reader.setdefault(key, linear)
            readers.setdefault(key, []).append(linear)
        # GPTQ treats the output columns independently, so weights that read the same input (Q/K/V,
        # gate/up) are quantized together as one [K, ΣN] matrix: same result, one pass over K.
        by_input: dict[str, dict[tuple, list]] = {}
        for key, linear in first_reader.items():
            scheme = scheme_of[linear]
            by_input.setdefault(linear.node.inputs[0].name, {}).setdefault(
                (scheme.bits, scheme.symmetric, scheme.group), []
            ).append((key, linear.weight_kn()))
        quantized: dict = {}
        reports: dict = {}
        for _ in progress(range(len(staged.stages)), desc="GPTQ stages", unit="stage"):
            names, hessians = staged.next_stage()
            for input_name in names:
                for (bits, symmetric, group), members in sorted(by_input.get(input_name, {}).items()):
                    self._quantize(members, hessians[input_name], bits, symmetric, group, quantized)
                    for key, _ in members:
                        q = quantized[key][0]
                        back = dequantize_blockwise(q)
                        for linear in readers[key]:
                            reports[linear] = self._report(linear, q, back, hessians[input_name])
                            if self.opts["sequential"]:
                                staged.replace(linear.node, 1, linear.from_kn(back))
                        del back
            del hessians
        names = NameAllocator(graph)
        layers = []
        for linear in targets:
            layers.append(reports[linear])
            q, stored = quantized[(linear.weight, scheme_of[linear])]
            self.emit(graph, names, linear, q, stored)
        return self.finish(
            model,
            layers,
            skipped,
            len(quantized),
            hessian_inputs=len(stage_of),
            stages=len(staged.stages),
            sequential=self.opts["sequential"],
            nodes_run=staged.nodes_run,
            frontier_mb=round(staged.frontier_bytes / 2**20, 2),
            group_scales="static" if self.opts["static_groups"] or self.opts["act_order"] else "lazy",
        )

    def _quantize(
        self, members: list, hessian: np.ndarray, bits: int, symmetric: bool, group: int, quantized: dict
    ) -> None:
        o = self.opts
        joined = np.concatenate([w for _, w in members], axis=1) if len(members) > 1 else members[0][1]
        q_all = gptq_quantize(
            joined,
            hessian,
            bits,
            group,
            symmetric,
            float(o["damp"]),
            o["act_order"],
            o["block"],
            o["static_groups"],
            o["clip_search"],
            self.signed_scales,
        )
        del joined
        start = 0
        for key, w in members:
            end = start + w.shape[1]
            quantized[key] = (
                BlockQuantized(
                    q_all.codes[start:end].copy(),
                    q_all.scales[start:end].copy(),
                    q_all.zero_points[start:end].copy(),
                    q_all.k,
                    q_all.bits,
                    q_all.group,
                    q_all.symmetric,
                ),
                {},
            )
            start = end

    def _report(self, linear: Linear, q: BlockQuantized, back: np.ndarray, hessian: np.ndarray) -> dict:
        weight = linear.weight_kn()
        rtn = dequantize_blockwise(
            quantize_blockwise(weight, q.bits, q.group, q.symmetric, signed_scales=self.signed_scales)
        )
        error, error_rtn = hessian_errors(weight, hessian, back, rtn)
        return {
            **self.layer_report(linear, weight, q),
            "relative_output_error": round(error, 8),
            "relative_output_error_rtn": round(error_rtn, 8),
        }
