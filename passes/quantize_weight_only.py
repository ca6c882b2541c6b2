"""quantize_weight_only: int4/int8 blockwise weights by round to nearest (RTN); activations stay float.

Targets, formats (`matmulnbits`, `qdq`, `custom`), the precision plan and the report are the ones
every weight-only pass shares (`onnxcomp.passes.weight_only_base`). Algorithm `rtn`: round to
nearest per block, with `clip_search` the per-block range ratio that minimizes the weight error.
Requires: nothing (no calibration). Guarantees: each weight element moves by at most half a
step of its block (asymmetric), or one step (symmetric: values on the short side of the signed
range may clip; with clip_search, values beyond the clipped range move further); the report
lists per layer bits, group, algorithm, format and the relative weight error.
"""

import onnx_ir as ir

from onnxcomp.algorithms.blockwise import BlockQuantized, quantize_blockwise
from onnxcomp.ir.graph import NameAllocator
from onnxcomp.ir.linears import release_weight
from onnxcomp.passes.weight_only_base import COMMON_OPTIONS, WeightOnlyPass


class QuantizeWeightOnly(WeightOnlyPass):
    name = "quantize_weight_only"
    algorithm = "rtn"
    options = {**COMMON_OPTIONS, "algorithm": "rtn", "clip_search": False}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        names = NameAllocator(model.graph)
        quantized: dict[tuple, tuple[BlockQuantized, dict]] = {}  # (weight, scheme) → result, stored initializers
        layers = []
        targets, skipped = self.targets(model)
        for linear in targets:
            scheme = self.scheme_for(linear)
            key = (linear.weight, scheme)
            weight = linear.weight_kn()
            if key not in quantized:
                q = quantize_blockwise(
                    weight,
                    scheme.bits,
                    scheme.group,
                    scheme.symmetric,
                    self.opts["clip_search"],
                    signed_scales=self.signed_scales,
                )
                quantized[key] = (q, {})
            q, stored = quantized[key]
            layers.append(self.layer_report(linear, weight, q))
            self.emit(model.graph, names, linear, q, stored)
            del weight
            release_weight(linear)
        return self.finish(model, layers, skipped, len(quantized))
