"""quantize_weight_only_gptq: int4/int8 blockwise weights chosen by GPTQ; activations stay float.

Same rewrite, formats (`matmulnbits`, `qdq`, `custom`), layout and report as
`quantize_weight_only` (it reuses that pass's emission), but the codes come from GPTQ
(`onnxcomp.gptq`): for every input tensor read by quantizable MatMul/Gemm weights, H = 2XᵀX/rows
is streamed from the calibration data in ONNX Runtime (one run of the input model); each weight is
then quantized row by row along K with its rounding error pushed onto the rows not yet quantized
(dampening `damp`, optional `act_order`, lazy updates in blocks of `block` rows). Weights that read
the same input share its Hessian.

Requires: calibration data (`--calib`, or `calibration=` in the API; a model kind with built-in
text). Guarantees: the stored scales and zero points follow RTN's rule on the original weight;
only the codes differ, chosen to lower the layer's output error on the calibration inputs. The
report adds per layer `relative_output_error` (tr(ΔWᵀHΔW)/tr(WᵀHW)) for GPTQ and for RTN.

Deviation from the paper's sequential mode: all Hessians come from the unquantized model in one
ONNX Runtime run (the earlier layers' quantization error does not feed the later layers' H).
"""

import numpy as np
import onnx_ir as ir

from onnxcomp.blockwise import BlockQuantized, dequantize_blockwise, quantize_blockwise
from onnxcomp.gptq import collect_hessians, gptq_quantize, hessian_error
from onnxcomp.graph import NameAllocator
from onnxcomp.weight_only import COMMON_OPTIONS, WeightOnlyPass


class QuantizeWeightOnlyGPTQ(WeightOnlyPass):
    name = "quantize_weight_only_gptq"
    algorithm = "gptq"
    options = {**COMMON_OPTIONS, "algorithm": "gptq", "damp": 0.01, "act_order": False, "block": 128}
    requires_context = ("calibration",)

    def validate_options(self) -> None:
        super().validate_options()
        o = self.opts
        if not isinstance(o["damp"], (int, float)) or not 0 <= o["damp"] < 1:
            raise self.fail(f"damp must be a number in [0, 1), not {o['damp']!r}")
        if not isinstance(o["block"], int) or o["block"] < 1:
            raise self.fail(f"block must be a positive integer, not {o['block']!r}")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.require_calibration()
        graph = model.graph
        targets, skipped = self.targets(model)
        hessians = collect_hessians(model, [node.inputs[0].name for node, _ in targets], self.context.calibration)
        names = NameAllocator(graph)
        bits_of = {id(node): self.bits_for(node) for node, _ in targets}
        # GPTQ treats the output columns independently, so weights that read the same input (Q/K/V,
        # gate/up) are quantized together as one [K, ΣN] matrix: same result, one pass over K.
        by_input: dict[tuple, list] = {}
        first_reader: dict = {}
        for node, weight in targets:
            key = (id(node.inputs[1]), bits_of[id(node)])  # a weight read by several MatMuls: quantized once, with its first reader's H
            if key not in first_reader:
                first_reader[key] = node
                by_input.setdefault((node.inputs[0].name, key[1]), []).append((key, weight))
        quantized: dict = {}
        for (input_name, bits), members in by_input.items():
            joined = np.concatenate([w for _, w in members], axis=1)
            q_all = gptq_quantize(joined, hessians[input_name], bits, self.opts["group_size"], self.opts["symmetric"],
                                  float(self.opts["damp"]), bool(self.opts["act_order"]), self.opts["block"])
            start = 0
            for key, w in members:
                end = start + w.shape[1]
                q = BlockQuantized(q_all.codes[start:end].copy(), q_all.scales[start:end].copy(), q_all.zero_points[start:end].copy(),
                                   q_all.k, q_all.bits, q_all.group, q_all.symmetric)
                quantized[key] = (q, {})
                start = end
        layers = []
        for node, weight in targets:
            bits = bits_of[id(node)]
            key = (id(node.inputs[1]), bits)
            h = hessians[first_reader[key].inputs[0].name]
            q, stored = quantized[key]
            back = dequantize_blockwise(q)
            rtn = dequantize_blockwise(quantize_blockwise(weight, q.bits, q.group, q.symmetric))
            layers.append({**self.layer_report(node, weight, q),
                           "relative_output_error": round(hessian_error(weight, back, h), 8),
                           "relative_output_error_rtn": round(hessian_error(weight, rtn, h), 8)})
            self.emit(graph, names, node, q, stored)
        return self.finish(model, layers, skipped, len(quantized), hessian_inputs=len(hessians),
                           note="Hessians from the unquantized model in one run (not sequential)")
