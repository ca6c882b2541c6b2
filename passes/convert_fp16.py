"""convert_fp16: the strongly typed float16 variant: float tensors, weights and QDQ scales in float16,
with the Casts at the graph inputs and outputs baked in.

Every float32 initializer and activation of the model becomes float16 — QuantizeLinear/
DequantizeLinear scales too (opset ≥ 19 lets a scale be float16; the int8/int4 codes and zero points
stay as they are) — and the graph inputs and outputs keep float32 through a Cast next to them. A
strongly typed TensorRT network (TensorRT 11 has no other mode) then runs each layer in the precision
the file states; `build-engine --fp16` checks that the model carries float16 tensors. The rewrite is
ONNX Runtime's converter (`onnxruntime.transformers.float16.convert_float_to_float16`, keep_io_types),
which also rewrites the dtype attributes (Cast `to`, Constant values) and keeps ops that have no
float16 form (its default block list) in float32 behind Casts; `keep_float` adds op types, `exclude`
node names.
Targets: those that compute in float16 (`Target.fp16`: ort-cuda, tensorrt, portable); ort-cpu is
refused (its kernels are float32: ONNX Runtime would insert Casts back around most nodes).
Requires: nothing (no calibration). Guarantees: inputs and outputs keep their float32 types and
shapes; every converted value changes by float16 rounding (relative 2⁻¹¹ in the normal range; values
below 5.96e-8 in magnitude become that, above 65504 that); the model passes the ONNX checker.
"""

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from onnxcomp.passes.base import CompressionPass


def _float32_count(graph: ir.Graph) -> int:
    return sum(1 for v in graph.initializers.values() if v.dtype == ir.DataType.FLOAT)


class ConvertFp16(CompressionPass):
    name = "convert_fp16"
    options = {"keep_float": [], "exclude": []}

    def validate_options(self) -> None:
        target = self.context.target
        if not target.fp16:
            raise self.fail(
                f"target {target.name!r} does not compute in float16 (its kernels are float32); "
                "use --target ort-cuda, tensorrt or portable"
            )
        for key in ("keep_float", "exclude"):
            value = self.opts[key]
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise self.fail(f"{key} must be a list of {'op types' if key == 'keep_float' else 'node names'}")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        before = _float32_count(model.graph)
        nodes_before = len(model.graph)
        converted = convert_float_to_float16(
            ir.to_proto(model),
            keep_io_types=True,
            op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *self.opts["keep_float"]}),
            node_block_list=self.opts["exclude"],
        )
        # the converter's value_info can keep a stale type next to a blocked op: infer them afresh
        del converted.graph.value_info[:]
        converted = onnx.shape_inference.infer_shapes(converted)
        model.graph = ir.from_proto(converted).graph  # the same Model object: passes rewrite in place
        TopologicalSortPass()(model)  # the converter appends the input Casts at the end
        halves = sum(1 for v in model.graph.initializers.values() if v.dtype == ir.DataType.FLOAT16)
        self.details = {
            "float16_initializers": halves,
            "float32_initializers_left": _float32_count(model.graph),
            "float32_initializers_before": before,
            "casts_added": len(model.graph) - nodes_before,
        }
        return ir.passes.PassResult(model, modified=bool(halves) or len(model.graph) != nodes_before)

    @classmethod
    def summary(cls, details: dict) -> str | None:
        return (
            f"convert_fp16: {details['float16_initializers']} initializers float16, "
            f"{details['casts_added']} Casts added (inputs/outputs float32)"
        )
