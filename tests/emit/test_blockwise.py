"""onnxcomp.emit: blockwise formats declare their scale rule and bits; the ort-cpu target lists them."""

import numpy as np
import onnx_ir as ir
from onnx import helper as h

from onnxcomp.algorithms.blockwise import quantize_blockwise
from onnxcomp.emit import FORMATS, ORT_CPU, BlockwiseEmitter
from onnxcomp.ir.graph import NameAllocator
from onnxcomp.ir.linears import linear_of


def test_formats_and_target_agree():
    assert set(ORT_CPU.weight_only_formats) == set(FORMATS)
    assert {name: f.signed_scales for name, f in FORMATS.items()} == {"matmulnbits": True, "custom": True, "qdq": False}
    custom = BlockwiseEmitter("custom")
    assert custom.format_for(4).name == "custom" and custom.format_for(8).name == "matmulnbits"


def test_emit_replaces_the_node_and_keeps_the_output_name(tiny):
    w = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    proto = tiny.make_model(
        [h.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        [("x", [2, 64])],
        [("y", [2, 16])],
        {"w": w},
        infer_shapes=True,
    )
    for fmt, ops in {
        "matmulnbits": ["MatMulNBits"],
        "qdq": ["DequantizeLinear", "MatMul"],
        "custom": ["MatMulInt4"],
    }.items():
        model = ir.from_proto(proto)
        emitter = BlockwiseEmitter(fmt)
        q = quantize_blockwise(w, 4, 32, True, signed_scales=emitter.signed_scales)
        emitter.emit(model.graph, NameAllocator(model.graph), linear_of(next(iter(model.graph))), q, {})
        assert [n.op_type for n in model.graph] == ops
        assert model.graph.outputs[0].name == "y" and model.graph.outputs[0].producer().name == "mm"
