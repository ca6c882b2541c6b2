"""fold_batchnorm: BatchNormalization after Conv, ConvTranspose or Gemm folded into its weights.

Requires: constant BatchNormalization parameters and weights. Guarantees: same outputs up to
float rounding (W' = W·γ/σ, B' = (B−μ)·γ/σ + β). Uses onnxscript's rewrite rules.
"""

import onnx_ir as ir
from onnxscript import rewriter
from onnxscript.rewriter.rules import common as rules

from onnxcomp.ir.graph import op_histogram
from onnxcomp.passes.base import CompressionPass

RULES = [
    rules.fuse_batchnorm_into_conv_rule,
    rules.fuse_batchnorm_into_conv_transpose_rule,
    rules.fuse_batchnorm_into_gemm_rule,
]


class FoldBatchNorm(CompressionPass):
    name = "fold_batchnorm"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = op_histogram(model)["BatchNormalization"]
        # The rewrite creates a fresh node; remember each BatchNorm's output so the fused node
        # can take the original Conv/Gemm name back (exclusions by name must keep working).
        fused_names = {
            node.outputs[0].name: node.inputs[0].producer().name
            for node in model.graph
            if node.op_type == "BatchNormalization" and node.inputs[0].producer() is not None
        }
        for node in model.graph:  # an omitted bias written as "" (None here) crashes onnxscript's rule
            if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.inputs) == 3 and node.inputs[2] is None:
                node.resize_inputs(2)
        rewriter.RewritePass(RULES)(model)
        for node in model.graph:
            original = next((fused_names[v.name] for v in node.outputs if v.name in fused_names), None)
            if original is not None and node.op_type != "BatchNormalization":
                node.name = original
        folded = before - op_histogram(model)["BatchNormalization"]
        self.details = {"folded": folded}
        return ir.passes.PassResult(model, modified=folded > 0)
