"""quantize_embedding: large constant Gather tables (word embeddings) stored as int8, one scale per row.

Rewrites Gather(W[N, D] float32 constant, ids, axis=0) into

    Mul(Cast(Gather(W_int8, ids), float), Gather(row_scales[N, 1], ids))

so only the gathered rows are dequantized at run time (plain ONNX ops, every runtime runs them).
On a target that reads int8 only through DequantizeLinear (`Target.quantized_through_dq`: TensorRT,
whose Gather and Cast take no INT8) the table is dequantized first, one scale per row, then gathered:

    Gather(DequantizeLinear(W_int8, row_scales[N], axis=0), ids)

(the same products q · scale).
Requires: nothing (no calibration). Guarantees: every output element within half a step
(max|row| / 254) of the original. A table that any other operator also reads (e.g. a tied LM
head MatMul) is left in float and reported.
"""

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.algorithms.quant_math import quantize_weight_per_channel
from onnxcomp.ir.graph import NameAllocator, NodeFilter, add_initializer, constant_array
from onnxcomp.passes.base import CompressionPass


def _is_row_gather(node: ir.Node) -> bool:
    axis = node.attributes.get("axis")
    return node.op_type == "Gather" and node.domain == "" and (axis is None or axis.as_int() == 0)


class QuantizeEmbedding(CompressionPass):
    name = "quantize_embedding"
    options = {"min_elements": 1_000_000, "exclude": []}  # word tables, not position tables

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        node_filter = NodeFilter(self.opts["exclude"])
        node_filter.check_all_match(model)
        names = NameAllocator(graph)
        tables, skipped = [], []
        candidates = {}
        for node in graph:
            if not _is_row_gather(node) or node_filter.excludes(node):
                continue
            table = node.inputs[0]
            array = constant_array(table)
            if (
                array is not None
                and array.dtype == np.float32
                and array.ndim == 2
                and array.size >= self.opts["min_elements"]
            ):
                candidates.setdefault(table.name, (table, array))
        for table_name, (table, array) in sorted(candidates.items()):
            users = [use.node for use in table.uses()]
            if not all(_is_row_gather(u) and not node_filter.excludes(u) for u in users):
                skipped.append({"table": table_name, "reason": "also read by another operator or an excluded Gather"})
                continue
            q, scales = quantize_weight_per_channel(array, axis=0)
            q_v = add_initializer(graph, names.new(f"{table_name}_quantized"), q)
            through_dq = self.context.target.quantized_through_dq
            s_v = add_initializer(
                graph, names.new(f"{table_name}_row_scale"), scales.reshape(-1) if through_dq else scales.reshape(-1, 1)
            )
            table_dq = None
            if through_dq:
                table_dq = ir.node("DequantizeLinear", [q_v, s_v], {"axis": 0}, name=names.new(f"{table_name}_dq"))
                table_dq.outputs[0].name = names.new(f"{table_dq.name}_out")
                graph.append(table_dq)
            for gather in users:
                ids = gather.inputs[1]
                if table_dq is not None:
                    scaled = ir.node(
                        "Gather", [table_dq.outputs[0], ids], {"axis": 0}, name=names.new(f"{gather.name}_dequantized")
                    )
                    new_nodes = (scaled,)
                else:
                    rows = ir.node("Gather", [q_v, ids], {"axis": 0}, name=names.new(f"{gather.name}_int8"))
                    row_scales = ir.node("Gather", [s_v, ids], {"axis": 0}, name=names.new(f"{gather.name}_scale"))
                    as_float = ir.node(
                        "Cast", [rows.outputs[0]], {"to": ir.DataType.FLOAT}, name=names.new(f"{gather.name}_cast")
                    )
                    scaled = ir.node(
                        "Mul", [as_float.outputs[0], row_scales.outputs[0]], name=names.new(f"{gather.name}_dequantize")
                    )
                    new_nodes = (rows, row_scales, as_float, scaled)
                for new in new_nodes:
                    new.outputs[0].name = names.new(f"{new.name}_out")
                    graph.append(new)
                old = gather.outputs[0]
                scaled.outputs[0].type, scaled.outputs[0].shape = old.type, old.shape
                if old.is_graph_output():  # the new value takes the output's place and name
                    name, old.name = old.name, f"{old.name}_replaced"
                    scaled.outputs[0].name = name
                old.replace_all_uses_with(scaled.outputs[0], replace_graph_outputs=True)
                graph.remove(gather, safe=True)
            tables.append(
                {
                    "table": table_name,
                    "shape": list(array.shape),
                    "bytes_before": int(array.nbytes),
                    "bytes_after": int(q.nbytes + scales.nbytes),
                    "gathers": len(users),
                }
            )
        if tables:
            TopologicalSortPass()(model)
        self.details = {"tables": tables, "skipped": skipped}
        return ir.passes.PassResult(model, modified=bool(tables))
