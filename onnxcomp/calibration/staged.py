"""Gram matrices H = 2XᵀX/rows of linear-layer inputs, stage by stage with earlier layers replaced
(`StagedHessians`: sequential GPTQ). One-shot Grams are a `GramRequest` (`onnxcomp.calibration.runner`).

`StagedHessians` runs a model stage by stage (see its docstring): the inputs of the linears are
grouped into stages in topological order, and the Hessians of each stage come from running only
the subgraph between two cuts, starting from the values cached at the previous cut, with the
weights quantized so far replaced by their dequantized values.
"""

import numpy as np
import onnx_ir as ir
from onnx import helper, numpy_helper

from onnxcomp.calibration.collectors import GramAccumulator
from onnxcomp.errors import OnnxcompError
from onnxcomp.runtime import calibration_session


def _outer_inputs(node) -> list:
    """The node's inputs, and the outer-scope values its subgraphs (If/Loop/Scan bodies) read."""
    values = list(node.inputs)
    for attr in node.attributes.values():
        graphs = (
            [attr.value]
            if attr.type == ir.AttributeType.GRAPH
            else list(attr.value)
            if attr.type == ir.AttributeType.GRAPHS
            else []
        )
        for sub in graphs:
            own = {v for v in sub.inputs} | {v for v in sub.initializers.values()}
            for inner in sub:
                own.update(o for o in inner.outputs)
            for inner in sub:
                values += [v for v in _outer_inputs(inner) if v is not None and v not in own]
    return values


class StagedHessians:
    """H = 2XᵀX/rows of chosen tensors, stage by stage through the model in ONNX Runtime.

    The tensors are grouped by their producer node (a graph input counts as produced before every
    node) and the stages ordered by that node's position in the (topologically sorted) graph: a
    stage's cut lies just after its producer. The values crossing a cut (the "frontier": produced
    before it and read at or after it, e.g. the residual stream, the mask and rotary tensors) are
    kept per calibration feed, and each stage runs only the nodes between the previous cut and its
    own that its frontier needs, in a fresh session holding only those nodes' initializers. Calls
    to `replace` (a linear's weight → its dequantized value, read by that node only) before the
    next stage make later stages see the quantized earlier layers (sequential GPTQ); without them
    the Hessians equal one run of the unmodified model (`GramRequest`s collected together).

    Memory: the graph's nodes and weights are not copied as a whole; what is held is one stage's
    subgraph, the frontier of every feed, and the Hessians of one stage. The calibration reader is
    iterated once.
    """

    def __init__(self, model, tensor_names: list[str], reader):
        self.model = model
        graph = model.graph
        self.nodes = list(graph)
        position = {node: i for i, node in enumerate(self.nodes)}
        inputs = {v for v in graph.inputs}
        self._value: dict[str, object] = {v.name: v for v in graph.inputs}
        self._last_use: dict[str, int] = {}
        self._produced: dict[str, int] = {v.name: -1 for v in graph.inputs}
        for i, node in enumerate(self.nodes):
            for v in _outer_inputs(node):
                if v is not None and (v.producer() is not None or v in inputs):
                    self._last_use[v.name] = i
            for v in node.outputs:
                self._value[v.name] = v
                self._produced[v.name] = i
        by_cut: dict[int, list[str]] = {}
        for name in sorted(set(tensor_names)):
            if name not in self._produced:
                raise OnnxcompError(f"GPTQ: tensor {name!r} is neither a graph input nor a node output")
            by_cut.setdefault(self._produced[name] + 1, []).append(name)
        self.stages: list[list[str]] = [by_cut[c] for c in sorted(by_cut)]
        self._cuts = sorted(by_cut)
        self._next = 0
        self._cut = 0
        self._reader = reader
        self._frontiers: list[dict[str, np.ndarray]] | None = None
        self._replaced: dict[ir.Node, dict[int, np.ndarray]] = {}  # node → {input index: array}
        self._position = position
        self.frontier_sizes: list[int] = []  # names kept at each cut, for the report and tests
        self.frontier_bytes = 0  # the largest frontier held, all feeds together
        self.nodes_run = 0  # nodes of all stage subgraphs together (each node runs in at most one stage)

    def replace(self, node, index: int, array: np.ndarray) -> None:
        """From the next stage on, `node` reads `array` instead of its constant input `index`."""
        self._replaced.setdefault(node, {})[index] = np.ascontiguousarray(array)

    def _frontier(self, cut: int) -> list[str]:
        return sorted(name for name, last in self._last_use.items() if self._produced[name] < cut <= last)

    def next_stage(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Runs the next stage over every feed; returns its tensor names and their Hessians."""
        if self._next >= len(self.stages):
            raise OnnxcompError("GPTQ: no stage left")
        names, cut = self.stages[self._next], self._cuts[self._next]
        self._next += 1
        keep = self._frontier(cut)
        self.frontier_sizes.append(len(keep))
        wanted = sorted(set(keep) | set(names))
        have = set(self._frontier(self._cut)) | (
            {v.name for v in self.model.graph.inputs} if self._frontiers is None else set()
        )
        outputs = [n for n in wanted if n not in have]
        proto, feeds_used = self._subgraph(self._cut, cut, outputs) if outputs else (None, [])
        session = calibration_session(proto.SerializeToString()) if proto is not None else None
        del proto
        acc: dict[str, GramAccumulator] = {}
        source = self._frontiers if self._frontiers is not None else self._reader
        new_frontiers = []
        count = 0
        for frontier in source:
            count += 1
            try:
                values = (
                    dict(zip(outputs, session.run(outputs, {n: frontier[n] for n in feeds_used}))) if session else {}
                )
            except Exception as exc:  # ORT refusing a batch (shapes the checker could not see): one line
                text = str(exc).strip()
                raise OnnxcompError(
                    f"calibration batch {count - 1}: ONNX Runtime cannot run the model on it "
                    f"({text.splitlines()[0] if text else type(exc).__name__})"
                ) from None
            for n in wanted:
                if n not in values:
                    values[n] = frontier[n]
            for n in names:
                x = np.asarray(values[n])
                if x.dtype.kind != "f":
                    raise OnnxcompError(f"GPTQ: tensor {n!r} is {x.dtype}, not float")
                if n not in acc:
                    acc[n] = GramAccumulator(x.shape[-1])
                acc[n].add(x)
            new_frontiers.append({n: values[n] for n in keep})
        if not count:
            raise OnnxcompError("GPTQ: calibration data produced no samples")
        del session
        self._frontiers, self._cut = new_frontiers, cut
        self.frontier_bytes = max(self.frontier_bytes, sum(a.nbytes for f in new_frontiers for a in f.values()))
        return names, {n: a.hessian for n, a in acc.items()}

    def _subgraph(self, start: int, stop: int, outputs: list[str]):
        """ModelProto of the nodes in [start, stop) that `outputs` need; its inputs are frontier values."""
        needed = set(outputs)
        chosen = []
        for i in range(stop - 1, start - 1, -1):
            node = self.nodes[i]
            if any(o.name in needed for o in node.outputs):
                chosen.append(node)
                needed.update(v.name for v in _outer_inputs(node) if v is not None)
        chosen.reverse()
        self.nodes_run += len(chosen)
        node_protos, initializers, graph_inputs, seen = [], [], [], set()
        for node in chosen:
            proto = ir.serde.serialize_node(node)
            for index, array in sorted(self._replaced.get(node, {}).items()):
                name = f"{node.inputs[index].name}__dequantized_{self._position[node]}"
                proto.input[index] = name
                initializers.append(numpy_helper.from_array(array, name))
            replaced = self._replaced.get(node, {})
            direct = [v for i, v in enumerate(node.inputs) if i not in replaced]
            for v in direct + _outer_inputs(node)[len(node.inputs) :]:
                if v is None or v.name in seen or v.name in self._produced or v.const_value is None:
                    continue
                seen.add(v.name)
                tensor = ir.serde.serialize_tensor(v.const_value)
                tensor.name = v.name
                initializers.append(tensor)
            node_protos.append(proto)
        produced_here = {o.name for node in chosen for o in node.outputs}
        feeds = sorted(n for n in needed if n not in produced_here and n in self._produced)
        for n in feeds:
            graph_inputs.append(helper.make_tensor_value_info(n, self._value[n].dtype.value, None))
        graph_outputs = [helper.make_tensor_value_info(n, self._value[n].dtype.value, None) for n in outputs]
        graph = helper.make_graph(node_protos, "gptq_stage", graph_inputs, graph_outputs, initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid(d, v) for d, v in self.model.opset_imports.items()],
            ir_version=self.model.ir_version,
        )
        for f in self.model.functions.values():
            model.functions.append(ir.serde.serialize_function(f))
        return model, feeds
