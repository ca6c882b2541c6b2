"""fold_constants: evaluate every subgraph whose inputs are all constants (onnxscript's folder).

Requires: nothing. Guarantees: same outputs up to float rounding; folded values become initializers.
"""

import onnx_ir as ir
from onnxscript import optimizer

from onnxcomp.passbase import CompressionPass


class FoldConstants(CompressionPass):
    name = "fold_constants"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = optimizer.fold_constants(model)
        return ir.passes.PassResult(model, modified=bool(result.modified))
