"""simplify: remove no-op and redundant data-movement patterns so quantization sees clean linears.

Rewrites (onnxscript rules): no-op Cast/Expand/Transpose, Transpose∘Transpose, Reshape∘Reshape,
Cast∘Cast, Unsqueeze∘Unsqueeze, Flatten→Reshape, Add 0 / Mul 1 / Div 1 / Sub 0, inference-mode
Dropout, successive Relu/Clip; then Identity nodes are removed. Requires: nothing. Guarantees: identical outputs.
"""

import onnx_ir as ir
from onnx_ir.passes.common import IdentityEliminationPass
from onnxscript import rewriter
from onnxscript.rewriter.rules import common as rules

from onnxcomp.ir.graph import op_histogram
from onnxcomp.passes.base import CompressionPass

RULES = [
    rules.no_op_cast_rule,
    rules.no_op_expand_rule,
    rules.no_op_transpose_rule,
    rules.transpose_transpose_rule,
    rules.reshape_reshape_rule,
    rules.cast_cast_rule,
    rules.unsqueeze_unsqueeze_rule,
    rules.add_0_rule,
    rules.sub_0_rule,
    rules.mul_by_1_rule,
    rules.div_by_1_rule,
    rules.dropout_inference_rule,
    rules.dropout_zero_rule,
    rules.successive_relu_rule,
    rules.successive_clip_rule,
    rules.successive_clip_relu_rule,
    rules.successive_relu_clip_rule,
]


class Simplify(CompressionPass):
    name = "simplify"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = sum(op_histogram(model).values())
        rewriter.RewritePass(RULES)(model)
        IdentityEliminationPass()(model)  # the rules leave Identity where a no-op was
        removed = before - sum(op_histogram(model).values())
        self.details = {"nodes_removed": removed}
        return ir.passes.PassResult(model, modified=removed != 0)
