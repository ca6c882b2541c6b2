"""quantize_weight_only: int4/int8 blockwise weights by round to nearest (RTN); activations stay float.

Targets, formats (`matmulnbits`, `qdq`, `custom`), the LM-head bit rule and the report are the
ones every weight-only pass shares (`onnxcomp.weight_only`). Algorithm `rtn`: round to nearest per
block, with `clip_search` the per-block range ratio that minimizes the weight error.
Requires: nothing (no calibration). Guarantees: each weight element moves by at most half a
step of its block (asymmetric), or one step (symmetric: values on the short side of the signed
range may clip; with clip_search, values beyond the clipped range move further); the report
lists per layer bits, group, algorithm, format and the relative weight error.
"""

import onnx_ir as ir

from onnxcomp.blockwise import BlockQuantized, quantize_blockwise
from onnxcomp.graph import NameAllocator
from onnxcomp.weight_only import COMMON_OPTIONS, WeightOnlyPass


class QuantizeWeightOnly(WeightOnlyPass):
    name = "quantize_weight_only"
    algorithm = "rtn"
    options = {**COMMON_OPTIONS, "algorithm": "rtn", "clip_search": False}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        names = NameAllocator(model.graph)
        quantized: dict[tuple, tuple[BlockQuantized, dict]] = {}  # (id(weight), bits) → result, stored initializers
        layers = []
        targets, skipped = self.targets(model)
        for node, weight in targets:
            bits, symmetric = self.bits_for(node), self.symmetric_for(node)
            key = (id(node.inputs[1]), bits)
            if key not in quantized:
                q = quantize_blockwise(weight, bits, self.opts["group_size"], symmetric, self.opts["clip_search"],
                                       signed_scales=self.signed_scales)
                quantized[key] = (q, {})
            q, stored = quantized[key]
            layers.append(self.layer_report(node, weight, q))
            self.emit(model.graph, names, node, q, stored)
        return self.finish(model, layers, skipped, len(quantized))
