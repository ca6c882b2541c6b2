"""What every weight-only pass shares: the target scan, the bit rule, emission in three formats, the report.

A weight-only pass (RTN, GPTQ, AWQ) rewrites every MatMul whose weight is a constant 2-D [K, N]
(and every Gemm with a constant B, transA = 0, alpha = beta = 1, as MatMul + Add) into one of:
- `matmulnbits`: ONNX Runtime's `com.microsoft.MatMulNBits` (packed codes, scales, zero points,
  block_size, accuracy_level): the fast path on ONNX Runtime CPU and CUDA. The default
  accuracy_level 4 lets ORT's CPU kernel quantize activations to int8 per block; 0 keeps float
  activations but decodes SmolLM2 slower than fp32, because the 8-bit LM head's kernel is slow
  at level 0 (`benchmarks/int4_smollm2.py`: 0.39x fp32 per token at level 4, 2.76x at level 0);
- `qdq`: an int4/uint4 (or int8/uint8) [K, N] initializer → DequantizeLinear(axis=0,
  block_size=group) → MatMul, standard opset 21 that TensorRT and other runtimes read;
- `custom`: the project's own `ai.onnxcomp.MatMulInt4` (custom_ops/), same inputs and packing as
  MatMulNBits; ONNX Runtime runs it only with the custom-op library registered.
All three store codes, scales and zero points in one layout (`onnxcomp.blockwise`); symmetric
MatMulNBits/MatMulInt4 blocks use ONNX Runtime's signed scales (the largest magnitude maps to −8,
a step of max|w|/8), QDQ keeps scales positive for TensorRT (max|w|/7 when that value is
positive). A weight read by several MatMuls is stored once. Linears whose output is a graph
output (an LM head) use `output_layer_bits` (default 8): SmolLM2's LM head is the layer most
sensitive to int4; output layers are always symmetric.

Tied embeddings: a row Gather whose float table [V, H] equals the transpose of a weight stored as
MatMulNBits/MatMulInt4 codes without zero points (symmetric) becomes ONNX Runtime's
`com.microsoft.GatherBlockQuantized` reading the *same* code and scale initializers, so the
table is stored once, in the LM head's bits and blocks. Formats or zero points it cannot read
are reported under `tied_tables` and leave the table to `quantize_embedding`.
"""

from collections import Counter
from typing import Any, ClassVar

import ml_dtypes
import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from .blockwise import BITS, GROUP_SIZES, BlockQuantized, dequantize_blockwise, packed_codes, packed_zero_points, signed_codes_kn
from .errors import OnnxcompError
from .graph import NameAllocator, NodeFilter, add_initializer, constant_array
from .passbase import CompressionPass

FORMATS = ("matmulnbits", "qdq", "custom")
CUSTOM_DOMAIN, CUSTOM_OP = "ai.onnxcomp", "MatMulInt4"
COMMON_OPTIONS: dict[str, Any] = {"bits": 4, "group_size": 128, "symmetric": True, "format": "matmulnbits",
                                  "accuracy_level": 4, "exclude": [], "output_layer_bits": 8}
_QDQ_CODE_TYPES = {(4, True): ml_dtypes.int4, (4, False): ml_dtypes.uint4, (8, True): np.int8, (8, False): np.uint8}


def as_kn_weight(node: ir.Node) -> tuple[np.ndarray | None, str]:
    """The node's weight as [K, N] float, or (None, why it is skipped)."""
    weight = constant_array(node.inputs[1]) if len(node.inputs) > 1 else None
    if weight is None:
        return None, "weight is not a constant"
    if weight.ndim != 2 or weight.dtype.kind != "f":
        return None, f"weight is not a 2-D float matrix (shape {list(weight.shape)}, {weight.dtype})"
    if node.op_type == "Gemm":
        attrs = node.attributes
        def attr(name, default):
            return attrs[name].value if name in attrs else default
        if attr("transA", 0) or attr("alpha", 1.0) != 1.0 or attr("beta", 1.0) != 1.0:
            return None, "Gemm with transA or alpha/beta ≠ 1"
        return (weight.T if attr("transB", 0) else weight), ""
    return weight, ""


def row_gather_tables(model: ir.Model) -> dict[tuple, list[tuple[ir.Node, np.ndarray]]]:
    """Row Gathers (axis 0) of constant 2-D float32 tables, by table shape: {(V, H): [(gather, table)]}."""
    tables: dict[tuple, list] = {}
    for node in model.graph:
        if node.op_type != "Gather" or node.domain != "" or (node.attributes.get("axis") and node.attributes["axis"].as_int()):
            continue
        table = constant_array(node.inputs[0])
        if table is not None and table.ndim == 2 and table.dtype == np.float32:
            tables.setdefault(tuple(table.shape), []).append((node, table))
    return tables


def tied_table(weight_kn: np.ndarray, tables: dict) -> str | None:
    """The name of a gathered table equal to the weight's transpose (a tied embedding / LM head), or None."""
    for gather, table in tables.get((weight_kn.shape[1], weight_kn.shape[0]), []):
        if np.array_equal(weight_kn.T, table):
            return gather.inputs[0].name
    return None


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(approx - exact) / max(np.linalg.norm(exact), 1e-30))


class WeightOnlyPass(CompressionPass):
    """Base of the weight-only passes. Subclasses set `name`, `algorithm`, `options` (starting from
    COMMON_OPTIONS) and implement `call`: scan with `targets`, quantize, then `emit` each layer and
    `finish`."""

    algorithm: ClassVar[str]

    def __init__(self, *args, **options):
        super().__init__(*args, **options)
        self._emitted: dict[int, tuple] = {}  # id(stored) → (weight value, transposed, quantized, stored initializers)

    def fail(self, message: str) -> OnnxcompError:
        return OnnxcompError(f"pass {self.name!r}: {message}")

    def validate_options(self) -> None:
        o = self.opts
        if o["bits"] not in BITS:
            raise self.fail(f"bits must be one of {', '.join(map(str, BITS))}, not {o['bits']!r}")
        if o["group_size"] not in GROUP_SIZES:
            raise self.fail(f"group_size must be one of {', '.join(map(str, GROUP_SIZES))}, not {o['group_size']!r}")
        if o["format"] not in FORMATS:
            raise self.fail(f"format must be one of {', '.join(FORMATS)}, not {o['format']!r}")
        if o["format"] == "custom" and o["bits"] != 4:
            raise self.fail("format 'custom' (MatMulInt4) is 4-bit only; use matmulnbits or qdq for 8 bits")
        if o.get("algorithm", self.algorithm) != self.algorithm:
            raise self.fail(f"algorithm must be {self.algorithm!r}, not {o['algorithm']!r}")
        if o["output_layer_bits"] not in (0, *BITS):
            raise self.fail(f"output_layer_bits must be 0 (same as bits) or one of {', '.join(map(str, BITS))}, "
                            f"not {o['output_layer_bits']!r}")
        for flag in ("symmetric", "clip_search", "act_order"):
            if flag in o and not isinstance(o[flag], bool):
                raise self.fail(f"{flag} must be true or false, not {o[flag]!r}")
        if not isinstance(o["exclude"], list) or not all(isinstance(p, str) for p in o["exclude"]):
            raise self.fail(f"exclude must be a list of op types or node-name globs, not {o['exclude']!r}")
        if o["accuracy_level"] not in (0, 1, 2, 3, 4):
            raise self.fail(f"accuracy_level must be 0-4, not {o['accuracy_level']!r}")

    def require_calibration(self) -> None:
        """For a pass run outside a Pipeline (which checks `requires_context` itself)."""
        if self.context.calibration is None:
            raise self.fail("needs calibration data: pass --calib FILE (or --model-kind with built-in text; "
                            "calibration= in the Python API)")

    def is_output_layer(self, node: ir.Node) -> bool:
        """A linear whose output is a graph output (an LM head: its error reaches the logits unmixed)
        and `output_layer_bits` is set."""
        return bool(self.opts["output_layer_bits"]) and node.outputs[0].is_graph_output()

    @property
    def signed_scales(self) -> bool:
        """Symmetric blocks may take negative scales (ONNX Runtime's rule) unless emitted as QDQ."""
        return self.opts["format"] != "qdq"

    def bits_for(self, node: ir.Node) -> int:
        return self.opts["output_layer_bits"] if self.is_output_layer(node) else self.opts["bits"]

    def symmetric_for(self, node: ir.Node) -> bool:
        """Output layers are symmetric whatever `symmetric` says: at 8 bits that costs nothing, and
        a tied embedding table can then read the LM head's codes (GatherBlockQuantized)."""
        return True if self.is_output_layer(node) else self.opts["symmetric"]

    def targets(self, model: ir.Model) -> tuple[list[tuple[ir.Node, np.ndarray]], list[dict]]:
        """[(node, its weight as [K, N])] to quantize, and [{node, reason}] for the ones skipped."""
        node_filter = NodeFilter(self.opts["exclude"])
        node_filter.check_all_match(model)
        targets, skipped = [], []
        for node in list(model.graph):
            if node.domain != "" or node.op_type not in ("MatMul", "Gemm"):
                continue
            if node_filter.excludes(node):
                skipped.append({"node": node.name, "reason": "excluded"})
                continue
            weight, why = as_kn_weight(node)
            if weight is None:
                skipped.append({"node": node.name, "reason": why})
                continue
            targets.append((node, weight))
        return targets, skipped

    def layer_report(self, node: ir.Node, weight: np.ndarray, q: BlockQuantized) -> dict:
        return {"node": node.name, "weight": node.inputs[1].name, "shape_kn": [q.k, q.n], "bits": q.bits,
                "group_size": q.group, "symmetric": q.symmetric, "algorithm": self.algorithm, "format": self.format_of(q),
                "relative_weight_error": round(relative_error(dequantize_blockwise(q), weight), 6)}

    def finish(self, model: ir.Model, layers: list[dict], skipped: list[dict], weights_quantized: int,
               **details) -> ir.passes.PassResult:
        """Marks shared weights in the report, sorts the graph, declares the op domains used."""
        readers = Counter(layer["weight"] for layer in layers)
        for layer in layers:
            if readers[layer["weight"]] > 1:
                layer["shared_weight"] = True  # one set of initializers serves every reader
        tied = self._share_tied_tables(model) if layers else []
        if layers:
            TopologicalSortPass()(model)
        if tied:
            details["tied_tables"] = tied
        for domain in sorted({n.domain for n in model.graph} & {"com.microsoft", CUSTOM_DOMAIN}):
            model.opset_imports.setdefault(domain, 1)
        self.details = {"layers": layers, "skipped": skipped, "weights_quantized": weights_quantized, **details}
        return ir.passes.PassResult(model, modified=bool(layers))

    def _share_tied_tables(self, model: ir.Model) -> list[dict]:
        """Rewrite row Gathers of a table that equals an emitted weight's transpose (see the module doc)."""
        names, report, tables = NameAllocator(model.graph), [], row_gather_tables(model)
        for weight_value, transposed, q, stored in self._emitted.values():
            weight = constant_array(weight_value)
            weight_kn = weight.T if transposed else weight
            for gather, table in tables.get((q.n, q.k), []):
                if gather.graph is None or not np.array_equal(weight_kn.T, table):
                    continue  # already rewritten, or a different table
                entry = {"gather": gather.name, "table": gather.inputs[0].name, "shares": weight_value.name}
                why = ("the qdq format" if self.format_of(q) == "qdq" else "zero points (asymmetric)" if "zero_points" in stored
                       else "indices of unknown rank" if gather.inputs[1].shape is None else "")
                if why:
                    report.append({**entry, "shared": False, "reason": f"GatherBlockQuantized cannot use {why}"})
                else:
                    self._gather_from_codes(model.graph, names, gather, q, stored)
                    report.append({**entry, "shared": True, "bits": q.bits, "group_size": q.group})
        return report

    @staticmethod
    def _gather_from_codes(graph, names, gather: ir.Node, q: BlockQuantized, stored: dict) -> None:
        """Gather(table, ids) → GatherBlockQuantized(codes [V, n_blocks, ·], ids, scales as [V, n_blocks, 1]),
        flattened to [..., n_blocks·group] and sliced to H when the last block is padded."""
        def const(base, values):
            return add_initializer(graph, names.new(f"{gather.name}_{base}"), np.array(values, dtype=np.int64))
        ids, old = gather.inputs[1], gather.outputs[0]
        rank = len(ids.shape)
        nodes = [ir.node("Reshape", [stored["scales"], const("scales_shape", [q.n, q.n_blocks, 1])], name=names.new(f"{gather.name}_scales"))]
        nodes.append(ir.node("GatherBlockQuantized", [stored["codes"], ids, nodes[0].outputs[0]],
                             {"bits": q.bits, "block_size": q.group, "gather_axis": 0, "quantize_axis": 2},
                             domain="com.microsoft", name=names.new(f"{gather.name}_blockwise")))
        nodes.append(ir.node("Reshape", [nodes[-1].outputs[0], const("flat", [0] * rank + [q.n_blocks * q.group])],
                             name=names.new(f"{gather.name}_flatten")))
        if q.n_blocks * q.group != q.k:
            nodes.append(ir.node("Slice", [nodes[-1].outputs[0], const("start", [0]), const("end", [q.k]), const("axis", [-1])],
                                 name=names.new(f"{gather.name}_unpad")))
        for new in nodes:
            new.outputs[0].name = names.new(f"{new.name}_out")
        result = nodes[-1].outputs[0]
        name, old.name = old.name, None
        result.name, result.type, result.shape = name, old.type, old.shape
        old.replace_all_uses_with(result, replace_graph_outputs=True)
        graph.insert_after(gather, nodes)
        graph.remove(gather, safe=True)

    # -- emission ------------------------------------------------------------------------
    def format_of(self, q: BlockQuantized) -> str:
        """The layer's format: MatMulInt4 is 4-bit only, so an 8-bit output layer uses MatMulNBits."""
        return "matmulnbits" if self.opts["format"] == "custom" and q.bits != 4 else self.opts["format"]

    def _stored(self, graph, names, q: BlockQuantized, stored: dict, base: str) -> dict:
        """Initializers for one quantized weight, created on first use and shared afterwards."""
        if "codes" in stored:
            return stored
        if self.format_of(q) == "qdq":
            codes, zero_points = signed_codes_kn(q)
            numpy_type = _QDQ_CODE_TYPES[(q.bits, q.symmetric)]
            stored["codes"] = add_initializer(graph, names.new(f"{base}_q{q.bits}"), codes.astype(numpy_type))
            stored["scales"] = add_initializer(graph, names.new(f"{base}_scales"), q.scales.T.copy())
            if zero_points is not None:
                stored["zero_points"] = add_initializer(graph, names.new(f"{base}_zero_points"), zero_points.astype(numpy_type))
        else:
            stored["codes"] = add_initializer(graph, names.new(f"{base}_q{q.bits}"), packed_codes(q))
            stored["scales"] = add_initializer(graph, names.new(f"{base}_scales"), q.scales)
            if not q.symmetric:
                stored["zero_points"] = add_initializer(graph, names.new(f"{base}_zero_points"), packed_zero_points(q))
        return stored

    def emit(self, graph, names, node: ir.Node, q: BlockQuantized, stored: dict) -> None:
        """Replaces `node` by its quantized form; `stored` carries the initializers between readers of one weight."""
        weight_name = node.inputs[1].name or node.name
        stored = self._stored(graph, names, q, stored, weight_name)
        transposed = node.op_type == "Gemm" and "transB" in node.attributes and node.attributes["transB"].as_int()
        self._emitted[id(stored)] = (node.inputs[1], bool(transposed), q, stored)
        activation, output = node.inputs[0], node.outputs[0]
        bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
        fmt = self.format_of(q)
        new_nodes = []
        if fmt == "qdq":
            dq = ir.node("DequantizeLinear", [stored["codes"], stored["scales"], stored.get("zero_points")],
                         {"axis": 0, "block_size": q.group}, name=names.new(f"{weight_name}_DequantizeLinear"))
            dq.outputs[0].name = names.new(f"{weight_name}_dequantized")
            matmul = ir.node("MatMul", [activation, dq.outputs[0]], name=node.name)
            new_nodes += [dq, matmul]
        else:
            inputs = [activation, stored["codes"], stored["scales"]]
            if "zero_points" in stored:
                inputs.append(stored["zero_points"])
            if fmt == "matmulnbits":
                attrs = {"K": q.k, "N": q.n, "bits": q.bits, "block_size": q.group}
                if self.opts["accuracy_level"]:
                    attrs["accuracy_level"] = self.opts["accuracy_level"]
                matmul = ir.node("MatMulNBits", inputs, attrs, domain="com.microsoft", name=node.name)
            else:
                matmul = ir.node(CUSTOM_OP, inputs, {"K": q.k, "N": q.n, "bits": 4, "group_size": q.group},
                                 domain=CUSTOM_DOMAIN, name=node.name)
            new_nodes.append(matmul)
        result = matmul.outputs[0]
        if bias is not None:
            add = ir.node("Add", [result, bias], name=names.new(f"{node.name}_bias"))
            result.name = names.new(f"{output.name}_matmul")
            new_nodes.append(add)
            result = add.outputs[0]
        name, output.name = output.name, None
        result.name, result.shape, result.type = name, output.shape, output.type
        output.replace_all_uses_with(result, replace_graph_outputs=True)
        graph.insert_after(node, new_nodes)
        graph.remove(node, safe=True)
