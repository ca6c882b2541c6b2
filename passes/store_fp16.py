"""store_fp16: weights a precision plan marks `fp16` stored as float16 and read through a Cast.

For each MatMul/Gemm with a constant 2-D float32 weight (`onnxcomp.ir.linears.weight_only_linears`)
whose scheme in `context.precision_plan` is `fp16`, the weight becomes a float16 initializer and a
`Cast(to=FLOAT)` feeds the layer (readers of one weight share one Cast). ONNX Runtime folds the Cast
when it loads the model, so the layer runs at float32 speed; the file holds half the bytes.

Requires: a precision plan (`plan_precision`); without one, or with no fp16 layer, nothing changes.
Guarantees: each such weight changes by float16 rounding only (relative error ≤ 2⁻¹¹ in the normal
range); the weight-only passes leave these layers alone (they skip `fp16` like `keep`).
"""

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.ir.graph import NameAllocator, add_initializer
from onnxcomp.ir.linears import weight_only_linears
from onnxcomp.passes.base import CompressionPass


class StoreFp16(CompressionPass):
    name = "store_fp16"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        plan = self.context.precision_plan
        if plan is None:
            return ir.passes.PassResult(model, modified=False)
        linears, _ = weight_only_linears(model, [])
        names = NameAllocator(model.graph)
        casts: dict[ir.Value, ir.Value] = {}
        stored = []
        for linear in linears:
            if plan.scheme_for(linear.node).kind != "fp16":
                continue
            weight = linear.weight
            if weight not in casts:
                half = add_initializer(model.graph, names.new(f"{weight.name}_fp16"), linear.array.astype(np.float16))
                cast = ir.node("Cast", [half], {"to": ir.DataType.FLOAT}, name=names.new(f"{weight.name}_Cast"))
                cast.outputs[0].name = names.new(f"{weight.name}_float")
                model.graph.append(cast)
                casts[weight] = cast.outputs[0]
            linear.node.replace_input_with(1, casts[weight])
            stored.append(linear.name)
        if stored:
            TopologicalSortPass()(model)
        self.details = {"layers": stored}
        return ir.passes.PassResult(model, modified=bool(stored))

    @classmethod
    def summary(cls, details: dict) -> str | None:
        layers = details.get("layers")
        return f"store_fp16: {len(layers)} layer weights stored as float16" if layers else None
