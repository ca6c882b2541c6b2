"""quantize_weight_only_gptq: int4/int8 blockwise weights chosen by GPTQ; activations stay float.

Same rewrite, formats (`matmulnbits`, `qdq`, `custom`), layout and report as
`quantize_weight_only` (it reuses that pass's emission), but the codes come from GPTQ
(`onnxcomp.gptq`): each weight is quantized row by row along K with its rounding error pushed onto
the rows not yet quantized, weighted by the inverse of H = 2XᵀX/rows of its calibration inputs X
(dampening `damp`, optional `act_order`, lazy updates in blocks of `block` rows; group scales
`static_groups` from the original weight or taken lazily from the updated one; optional
`clip_search` of each group's range by its output error). Weights that read the same input (Q/K/V,
gate/up) share its Hessian and are quantized as one matrix.

Sequential (`sequential: true`, the default, as in the paper): the linears' inputs are grouped into
stages in topological order (in a decoder block: q/k/v, o, gate/up, down; then the LM head), and
the Hessians of a stage are streamed through ONNX Runtime from the model in which every earlier
stage's weights already hold their quantized-then-dequantized values, so each layer compensates
the error of the layers before it. Each stage runs only the subgraph from the values cached at the
previous stage boundary (`onnxcomp.gptq.StagedHessians`); with `sequential: false` the same
stages run on the unmodified model (every H from the float model, as a one-shot collection gives).

Requires: calibration data (`--calib`, or `calibration=` in the API; a model kind with built-in
text), iterated once; every quantized linear's input must be a float tensor. Guarantees: the
stored codes, scales and zero points use RTN's layout and formats; with `static_groups` the scales
and zero points are RTN's (on the original weight) and only the codes differ. The report adds per
layer `relative_output_error` (tr(ΔWᵀHΔW)/tr(WᵀHW), H from the layer's stage) for GPTQ and for RTN,
and the number of stages. Memory: one stage's Hessians and subgraph, and the stage boundary's
tensors for every calibration feed (SmolLM2-135M, 16 windows: peak RSS below 4 GiB).
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.blockwise import BlockQuantized, dequantize_blockwise, quantize_blockwise
from onnxcomp.gptq import StagedHessians, gptq_quantize, hessian_error
from onnxcomp.graph import NameAllocator
from onnxcomp.progress import progress
from onnxcomp.weight_only import COMMON_OPTIONS, WeightOnlyPass


class QuantizeWeightOnlyGPTQ(WeightOnlyPass):
    name = "quantize_weight_only_gptq"
    algorithm = "gptq"
    options = {**COMMON_OPTIONS, "algorithm": "gptq", "damp": 0.01, "act_order": False, "block": 128,
               "sequential": True, "static_groups": True, "clip_search": False}
    requires_context = ("calibration",)

    def validate_options(self) -> None:
        super().validate_options()
        o = self.opts
        if isinstance(o["damp"], bool) or not isinstance(o["damp"], (int, float)) or not 0 <= o["damp"] < 1:
            raise self.fail(f"damp must be a number in [0, 1), not {o['damp']!r}")
        if isinstance(o["block"], bool) or not isinstance(o["block"], int) or o["block"] < 1:
            raise self.fail(f"block must be a positive integer, not {o['block']!r}")
        for flag in ("sequential", "static_groups"):
            if not isinstance(o[flag], bool):
                raise self.fail(f"{flag} must be true or false, not {o[flag]!r}")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.require_calibration()
        graph = model.graph
        targets, skipped = self.targets(model)
        if not targets:
            return self.finish(model, [], skipped, 0)
        bits_of = {id(node): self.bits_for(node) for node, _ in targets}
        staged = StagedHessians(model, [node.inputs[0].name for node, _ in targets], self.context.calibration)
        stage_of = {name: i for i, names in enumerate(staged.stages) for name in names}
        position = {id(node): i for i, node in enumerate(graph)}
        # A weight read by several MatMuls is quantized once, with the H of its reader in the earliest stage.
        first_reader: dict = {}
        readers: dict = {}
        for node, weight in sorted(targets, key=lambda t: (stage_of[t[0].inputs[0].name], position[id(t[0])])):
            key = (id(node.inputs[1]), bits_of[id(node)])
            first_reader.setdefault(key, (node, weight))
            readers.setdefault(key, []).append((node, weight))
        # GPTQ treats the output columns independently, so weights that read the same input (Q/K/V,
        # gate/up) are quantized together as one [K, ΣN] matrix: same result, one pass over K.
        by_input: dict[str, dict[tuple, list]] = {}
        for key, (node, weight) in first_reader.items():
            scheme = (key[1], self.symmetric_for(node))
            by_input.setdefault(node.inputs[0].name, {}).setdefault(scheme, []).append((key, weight))
        quantized: dict = {}
        reports: dict = {}
        for _ in progress(range(len(staged.stages)), desc="GPTQ stages", unit="stage"):
            names, hessians = staged.next_stage()
            for input_name in names:
                for (bits, symmetric), members in sorted(by_input.get(input_name, {}).items()):
                    self._quantize(members, hessians[input_name], bits, symmetric, quantized)
                    for key, _ in members:
                        q = quantized[key][0]
                        back = dequantize_blockwise(q)
                        for node, weight in readers[key]:
                            reports[id(node)] = self._report(node, weight, q, back, hessians[input_name])
                            if self.opts["sequential"]:
                                staged.replace(node, 1, self._node_layout(node, back))
                        del back
            del hessians
        names = NameAllocator(graph)
        layers = []
        for node, _ in targets:
            layers.append(reports[id(node)])
            q, stored = quantized[(id(node.inputs[1]), bits_of[id(node)])]
            self.emit(graph, names, node, q, stored)
        return self.finish(model, layers, skipped, len(quantized), hessian_inputs=len(stage_of), stages=len(staged.stages),
                           sequential=self.opts["sequential"], nodes_run=staged.nodes_run,
                           frontier_mb=round(staged.frontier_bytes / 2**20, 2),
                           group_scales="static" if self.opts["static_groups"] or self.opts["act_order"] else "lazy")

    def _quantize(self, members: list, hessian: np.ndarray, bits: int, symmetric: bool, quantized: dict) -> None:
        o = self.opts
        joined = np.concatenate([w for _, w in members], axis=1) if len(members) > 1 else members[0][1]
        q_all = gptq_quantize(joined, hessian, bits, o["group_size"], symmetric, float(o["damp"]), o["act_order"], o["block"],
                              o["static_groups"], o["clip_search"], self.signed_scales)
        del joined
        start = 0
        for key, w in members:
            end = start + w.shape[1]
            quantized[key] = (BlockQuantized(q_all.codes[start:end].copy(), q_all.scales[start:end].copy(),
                                             q_all.zero_points[start:end].copy(), q_all.k, q_all.bits, q_all.group,
                                             q_all.symmetric), {})
            start = end

    def _report(self, node, weight, q: BlockQuantized, back: np.ndarray, hessian: np.ndarray) -> dict:
        rtn = dequantize_blockwise(quantize_blockwise(weight, q.bits, q.group, q.symmetric, signed_scales=self.signed_scales))
        return {**self.layer_report(node, weight, q),
                "relative_output_error": round(hessian_error(weight, back, hessian), 8),
                "relative_output_error_rtn": round(hessian_error(weight, rtn, hessian), 8)}

    @staticmethod
    def _node_layout(node: ir.Node, back_kn: np.ndarray) -> np.ndarray:
        """The dequantized [K, N] weight in the node's own layout and dtype (Gemm transB: [N, K])."""
        transposed = node.op_type == "Gemm" and "transB" in node.attributes and node.attributes["transB"].as_int()
        dtype = node.inputs[1].const_value.dtype.numpy()
        return (back_kn.T if transposed else back_kn).astype(dtype)
