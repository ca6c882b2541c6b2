"""fold_constants: evaluate every subgraph whose inputs are all constants (onnxscript's folder).

Requires: nothing. Guarantees: same outputs up to float rounding; folded values become initializers.
Size limits are lifted: a weight computed from constants (e.g. fp16 storage + Cast) must become an
initializer, or quantization cannot see it.
"""

import onnx_ir as ir
from onnxscript import optimizer

from onnxcomp.passes.base import CompressionPass

SIZE_LIMIT = 2**31  # elements


class FoldConstants(CompressionPass):
    name = "fold_constants"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = optimizer.fold_constants(model, input_size_limit=SIZE_LIMIT, output_size_limit=SIZE_LIMIT)
        return ir.passes.PassResult(model, modified=bool(result.modified))
