"""Writing blockwise-quantized linear layers (weight-only int4/int8) in a runtime's format.

A weight-only algorithm produces `BlockQuantized` codes in one layout (`onnxcomp.algorithms.
blockwise`); a format writes them into the graph. Formats, registered by name:
- `matmulnbits`: ONNX Runtime's `com.microsoft.MatMulNBits` (packed codes, scales, zero points,
  block_size, accuracy_level): the fast path on ONNX Runtime CPU and CUDA. accuracy_level 4 (the
  weight-only passes' default) lets ORT's CPU kernel quantize activations to int8 per block; 0
  keeps float activations but decodes SmolLM2 slower than fp32 (`benchmarks/int4_smollm2.py`);
- `qdq`: an int4/uint4 (or int8/uint8) [K, N] initializer → DequantizeLinear(axis=0,
  block_size=group) → MatMul, standard opset 21 that TensorRT and other runtimes read;
- `custom`: the project's own `ai.onnxcomp::MatMulInt4` (custom_ops/), same inputs and packing as
  MatMulNBits, 4-bit only (an 8-bit layer falls back to MatMulNBits); ONNX Runtime runs it only
  with the custom-op library registered.
Scale rule: symmetric MatMulNBits/MatMulInt4 blocks take ONNX Runtime's signed scales (the
largest magnitude maps to −8, a step of max|w|/8); QDQ keeps scales positive (TensorRT requires
it). The algorithm asks the emitter (`signed_scales`) and never branches on a format.

A weight read by several MatMuls is stored once (the caller passes the same `stored` dict).
Tied embeddings: a row Gather whose float table [V, H] equals the transpose of a weight stored as
MatMulNBits/MatMulInt4 codes without zero points becomes `com.microsoft.GatherBlockQuantized`
reading the *same* code and scale initializers, so the table is stored once, in the LM head's bits
and blocks; a weight stored per channel by `qdq` (tensorrt's int8 LM head) is shared by a row
Gather on the transpose of its DequantizeLinear output (standard ops); formats or zero points it cannot read are
reported and left to `quantize_embedding`.
"""

from typing import ClassVar

import ml_dtypes
import numpy as np
import onnx_ir as ir

from onnxcomp.algorithms.blockwise import BlockQuantized, packed_codes, packed_zero_points, signed_codes_kn
from onnxcomp.custom_ops.reference import DOMAIN as CUSTOM_DOMAIN
from onnxcomp.custom_ops.reference import OP_TYPE as CUSTOM_OP
from onnxcomp.emit.targets import ORT_CPU
from onnxcomp.ir.graph import NameAllocator, add_initializer
from onnxcomp.ir.linears import Linear
from onnxcomp.ir.patterns import row_gather_tables

_QDQ_CODE_TYPES = {(4, True): ml_dtypes.int4, (4, False): ml_dtypes.uint4, (8, True): np.int8, (8, False): np.uint8}


class LinearFormat:
    """How one blockwise linear is stored and computed in a runtime's ops."""

    name: ClassVar[str]
    domain: ClassVar[str] = ""
    signed_scales: ClassVar[bool] = True
    bits: ClassVar[tuple[int, ...]] = (4, 8)
    gather_shares_codes: ClassVar[bool] = True  # GatherBlockQuantized can read its codes
    per_channel: ClassVar[bool] = False  # can write one block of all K rows as unblocked per-channel scales

    def store(
        self, graph, names: NameAllocator, q: BlockQuantized, base: str, per_channel=False
    ) -> dict[str, ir.Value]:
        stored = {
            "codes": add_initializer(graph, names.new(f"{base}_q{q.bits}"), packed_codes(q)),
            "scales": add_initializer(graph, names.new(f"{base}_scales"), q.scales),
        }
        if not q.symmetric:
            stored["zero_points"] = add_initializer(graph, names.new(f"{base}_zero_points"), packed_zero_points(q))
        return stored

    def nodes(
        self,
        activation: ir.Value,
        stored: dict,
        q: BlockQuantized,
        name: str,
        weight_name: str,
        names: NameAllocator,
        accuracy_level: int,
    ) -> list[ir.Node]:
        """The nodes computing activation · W (the last one's output is the layer's), named `name`."""
        raise NotImplementedError


FORMATS: dict[str, LinearFormat] = {}


def register(cls):
    FORMATS[cls.name] = cls()
    return cls


def _packed_inputs(activation, stored) -> list[ir.Value]:
    return [
        activation,
        stored["codes"],
        stored["scales"],
        *([stored["zero_points"]] if "zero_points" in stored else []),
    ]


@register
class MatMulNBits(LinearFormat):
    name = "matmulnbits"
    domain = "com.microsoft"

    def nodes(self, activation, stored, q, name, weight_name, names, accuracy_level):
        attrs = {"K": q.k, "N": q.n, "bits": q.bits, "block_size": q.group}
        if accuracy_level:
            attrs["accuracy_level"] = accuracy_level
        return [ir.node("MatMulNBits", _packed_inputs(activation, stored), attrs, domain=self.domain, name=name)]


@register
class MatMulInt4(LinearFormat):
    name = "custom"
    domain = CUSTOM_DOMAIN
    bits = (4,)

    def nodes(self, activation, stored, q, name, weight_name, names, accuracy_level):
        attrs = {"K": q.k, "N": q.n, "bits": 4, "group_size": q.group}
        return [ir.node(CUSTOM_OP, _packed_inputs(activation, stored), attrs, domain=self.domain, name=name)]


@register
class DequantizeBlocks(LinearFormat):
    name = "qdq"
    signed_scales = False
    gather_shares_codes = False
    per_channel = True

    def store(self, graph, names, q, base, per_channel=False):
        codes, zero_points = signed_codes_kn(q)
        numpy_type = _QDQ_CODE_TYPES[(q.bits, q.symmetric)]
        scales = q.scales[:, 0].copy() if per_channel else q.scales.T.copy()  # [N] or [n_blocks, N]
        stored = {
            "codes": add_initializer(graph, names.new(f"{base}_q{q.bits}"), codes.astype(numpy_type)),
            "scales": add_initializer(graph, names.new(f"{base}_scales"), scales),
        }
        if per_channel:
            stored["per_channel"] = True
            if zero_points is not None:
                zero_points = zero_points[0]
        if zero_points is not None:
            stored["zero_points"] = add_initializer(
                graph, names.new(f"{base}_zero_points"), zero_points.astype(numpy_type)
            )
        return stored

    def nodes(self, activation, stored, q, name, weight_name, names, accuracy_level):
        dq = ir.node(
            "DequantizeLinear",
            [stored["codes"], stored["scales"], stored.get("zero_points")],
            {"axis": 1} if stored.get("per_channel") else {"axis": 0, "block_size": q.group},
            name=names.new(f"{weight_name}_DequantizeLinear"),
        )
        dq.outputs[0].name = names.new(f"{weight_name}_dequantized")
        return [dq, ir.node("MatMul", [activation, dq.outputs[0]], name=name)]


class BlockwiseEmitter:
    """Writes blockwise linears in one format (per layer: `format_for` its bits) and shares tied tables."""

    def __init__(self, format_name: str, accuracy_level: int = 4):
        self.format = FORMATS[format_name]
        self.accuracy_level = accuracy_level
        self._emitted: list[tuple[Linear, BlockQuantized, dict]] = []  # one entry per stored weight

    @property
    def signed_scales(self) -> bool:
        """Whether symmetric blocks may take negative scales (what the algorithm must produce)."""
        return self.format.signed_scales

    def format_for(self, bits: int, per_channel: bool = False) -> LinearFormat:
        """The layer's format: one that cannot store `bits` (MatMulInt4 is 4-bit) falls back to MatMulNBits;
        a per-channel layer in a format without that form (MatMulNBits, MatMulInt4) is written as an
        int8 DequantizeLinear over N before the MatMul (ONNX Runtime CPU fuses it into an 8-bit MatMulNBits)."""
        if per_channel and not self.format.per_channel:
            return FORMATS["qdq"]
        return self.format if bits in self.format.bits else FORMATS["matmulnbits"]

    def emit(
        self, graph, names: NameAllocator, linear: Linear, q: BlockQuantized, stored: dict, per_channel=False
    ) -> None:
        """Replaces the linear's node by its quantized form; `stored` carries the initializers between
        the readers of one weight (filled on first use). `per_channel`: q is one block of all K rows
        per column, written with unblocked per-channel scales (as a qdq layer whatever the format)."""
        node = linear.node
        fmt = self.format_for(q.bits, per_channel)
        weight_name = node.inputs[1].name or node.name
        if "codes" not in stored:
            stored.update(fmt.store(graph, names, q, weight_name, per_channel=per_channel))
        if not any(entry[2] is stored for entry in self._emitted):
            self._emitted.append((linear, q, stored))
        activation, output = node.inputs[0], node.outputs[0]
        bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        new_nodes = fmt.nodes(activation, stored, q, node.name, weight_name, names, self.accuracy_level)
        result = new_nodes[-1].outputs[0]
        if bias is not None:
            add = ir.node("Add", [result, bias], name=names.new(f"{node.name}_bias"))
            result.name = names.new(f"{output.name}_matmul")
            new_nodes.append(add)
            result = add.outputs[0]
        ir.convenience.replace_nodes_and_values(graph, node, [node], new_nodes, [output], [result])

    def domains(self, model: ir.Model) -> list[str]:
        """Op domains the emitted nodes use (to declare in the model's opset imports)."""
        return sorted({n.domain for n in model.graph} & (set(ORT_CPU.domains) - {""}))

    def share_tied_tables(self, model: ir.Model) -> list[dict]:
        """Rewrite row Gathers of a table that equals an emitted weight's transpose (see the module doc)."""
        names, report, tables = NameAllocator(model.graph), [], row_gather_tables(model)
        for linear, q, stored in self._emitted:
            weight_kn = linear.weight_kn()
            for gather, table in tables.get((q.n, q.k), []):
                if gather.graph is None or not np.array_equal(weight_kn.T, table):
                    continue  # already rewritten, or a different table
                entry = {"gather": gather.name, "table": gather.inputs[0].name, "shares": linear.weight.name}
                if stored.get("per_channel") and "zero_points" not in stored and gather.inputs[1].shape is not None:
                    _gather_from_channel_dq(model.graph, names, gather, stored)
                    report.append({**entry, "shared": True, "bits": q.bits, "per_channel": True})
                    continue
                why = (
                    "the qdq format"
                    if not self.format_for(q.bits).gather_shares_codes
                    else "zero points (asymmetric)"
                    if "zero_points" in stored
                    else "indices of unknown rank"
                    if gather.inputs[1].shape is None
                    else ""
                )
                if why:
                    report.append({**entry, "shared": False, "reason": f"GatherBlockQuantized cannot use {why}"})
                else:
                    _gather_from_codes(model.graph, names, gather, q, stored)
                    report.append({**entry, "shared": True, "bits": q.bits, "group_size": q.group})
        return report


def _gather_from_codes(graph, names, gather: ir.Node, q: BlockQuantized, stored: dict) -> None:
    """Gather(table, ids) → GatherBlockQuantized(codes [V, n_blocks, ·], ids, scales as [V, n_blocks, 1]),
    flattened to [..., n_blocks·group] and sliced to H when the last block is padded."""

    def const(base, values):
        return add_initializer(graph, names.new(f"{gather.name}_{base}"), np.array(values, dtype=np.int64))

    ids, old = gather.inputs[1], gather.outputs[0]
    rank = len(ids.shape)
    nodes = [
        ir.node(
            "Reshape",
            [stored["scales"], const("scales_shape", [q.n, q.n_blocks, 1])],
            name=names.new(f"{gather.name}_scales"),
        )
    ]
    nodes.append(
        ir.node(
            "GatherBlockQuantized",
            [stored["codes"], ids, nodes[0].outputs[0]],
            {"bits": q.bits, "block_size": q.group, "gather_axis": 0, "quantize_axis": 2},
            domain="com.microsoft",
            name=names.new(f"{gather.name}_blockwise"),
        )
    )
    nodes.append(
        ir.node(
            "Reshape",
            [nodes[-1].outputs[0], const("flat", [0] * rank + [q.n_blocks * q.group])],
            name=names.new(f"{gather.name}_flatten"),
        )
    )
    if q.n_blocks * q.group != q.k:
        nodes.append(
            ir.node(
                "Slice",
                [nodes[-1].outputs[0], const("start", [0]), const("end", [q.k]), const("axis", [-1])],
                name=names.new(f"{gather.name}_unpad"),
            )
        )
    for new in nodes:
        new.outputs[0].name = names.new(f"{new.name}_out")
    ir.convenience.replace_nodes_and_values(graph, gather, [gather], nodes, [old], [nodes[-1].outputs[0]])


def _gather_from_channel_dq(graph, names, gather: ir.Node, stored: dict) -> None:
    """Gather(table [V, H], ids) → Gather(Transpose(DequantizeLinear(codes [H, V], scales [V], axis=1)), ids):
    the table's rows are the columns of the LM head's per-channel int8 weight, read through the head's
    own DequantizeLinear (standard ops: TensorRT and every runtime run it). A column Gather (axis 1)
    without the Transpose reads wrong values in OpenVINO 2026.4 (measured), so the table is transposed
    whole; runtimes fold it as a constant or transpose it per call."""
    dq = next(use.node for use in stored["codes"].uses() if use.node.op_type == "DequantizeLinear")
    ids, old = gather.inputs[1], gather.outputs[0]
    table = ir.node("Transpose", [dq.outputs[0]], {"perm": [1, 0]}, name=names.new(f"{gather.name}_table"))
    rows = ir.node("Gather", [table.outputs[0], ids], {"axis": 0}, name=names.new(f"{gather.name}_rows"))
    for new in (table, rows):
        new.outputs[0].name = names.new(f"{new.name}_out")
    ir.convenience.replace_nodes_and_values(graph, gather, [gather], [table, rows], [old], [rows.outputs[0]])
