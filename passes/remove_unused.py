"""remove_unused: drop nodes and initializers that no graph output depends on, and sort topologically.

Requires: nothing. Guarantees: identical outputs.
"""

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass, TopologicalSortPass

from onnxcomp.passes.base import CompressionPass


class RemoveUnused(CompressionPass):
    name = "remove_unused"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = RemoveUnusedNodesPass()(model).modified
        TopologicalSortPass()(model)
        return ir.passes.PassResult(model, modified=modified)
