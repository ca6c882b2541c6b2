"""A probe model for int8 QDQ sensitivity: any subset of layers quantized, in one ONNX Runtime session.

For each candidate layer (a Conv/MatMul/Gemm with a constant weight), its activation input `a` is
replaced, for that layer only, by `a + g·(DQ(Q(a)) − a)` with `g` a scalar graph input (0: float,
1: int8 with the calibrated scale and zero point), and its weight is declared an overridable
initializer so a run can feed the int8-dequantized weight. With `dynamic`, MatMul/Gemm layers also
get `+ h·(DQ(DynamicQuantizeLinear(a)) − a)`: int8 with the tensor's own range at run time.
Weights are int8 per channel, rounded to nearest or, for layers given a Gram, by GPTQ (as
`quantize_qdq` with `weight_rounding: gptq` writes them). `error(layers, dynamic)` runs the feeds
with those layers switched on (static or dynamic) and returns the output error against the float
model.
"""

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from onnxcomp.algorithms.gptq import int8_weight
from onnxcomp.ir.linears import Linear
from onnxcomp.precision.measure import OutputComparison
from onnxcomp.runtime import ort_session


class QDQProbe:
    def __init__(
        self,
        model: ir.Model,
        layers: list[Linear],
        qparams: dict[str, tuple],
        feeds: list[dict],
        dynamic: bool = False,
        grams: dict[str, np.ndarray] | None = None,
    ):
        """layers: named linears; qparams: activation input name → (scale, zero point) as numpy scalars;
        grams: layer name → Gram of its input, for the layers whose int8 weights GPTQ rounds."""
        proto = ir.to_proto(model)
        by_name = {node.name: i for i, node in enumerate(proto.graph.node)}
        inits = {init.name: init for init in proto.graph.initializer}
        inserted: dict[int, list] = {}
        self.gates: dict[str, str] = {}
        self.dynamic_gates: dict[str, str] = {}
        self.weights: dict[str, tuple[str, np.ndarray]] = {}
        for k, linear in enumerate(layers):
            node = proto.graph.node[by_name[linear.name]]
            a = node.input[0]
            scale, zero_point = qparams[a]
            gate, p = f"probe_gate_{k}", f"probe_{k}"
            proto.graph.initializer.extend(
                [
                    numpy_helper.from_array(np.asarray(scale), f"{p}_s"),
                    numpy_helper.from_array(np.asarray(zero_point), f"{p}_z"),
                ]
            )
            proto.graph.input.append(helper.make_tensor_value_info(gate, TensorProto.FLOAT, []))
            inserted[by_name[linear.name]] = [
                helper.make_node("QuantizeLinear", [a, f"{p}_s", f"{p}_z"], [f"{p}_q"]),
                helper.make_node("DequantizeLinear", [f"{p}_q", f"{p}_s", f"{p}_z"], [f"{p}_dq"]),
                helper.make_node("Sub", [f"{p}_dq", a], [f"{p}_d"]),
                helper.make_node("Mul", [f"{p}_d", gate], [f"{p}_m"]),
                helper.make_node("Add", [a, f"{p}_m"], [f"{p}_a"]),
            ]
            node.input[0] = f"{p}_a"
            if dynamic and node.op_type in ("MatMul", "Gemm"):
                gate_d = f"probe_dynamic_gate_{k}"
                proto.graph.input.append(helper.make_tensor_value_info(gate_d, TensorProto.FLOAT, []))
                inserted[by_name[linear.name]] += [
                    helper.make_node("DynamicQuantizeLinear", [a], [f"{p}_yq", f"{p}_ys", f"{p}_yz"]),
                    helper.make_node("DequantizeLinear", [f"{p}_yq", f"{p}_ys", f"{p}_yz"], [f"{p}_ydq"]),
                    helper.make_node("Sub", [f"{p}_ydq", a], [f"{p}_yd"]),
                    helper.make_node("Mul", [f"{p}_yd", gate_d], [f"{p}_ym"]),
                    helper.make_node("Add", [f"{p}_a", f"{p}_ym"], [f"{p}_ya"]),
                ]
                node.input[0] = f"{p}_ya"
                self.dynamic_gates[linear.name] = gate_d
            self.gates[linear.name] = gate
            w = node.input[1]
            if w not in {i.name for i in proto.graph.input}:
                init = inits[w]
                proto.graph.input.append(helper.make_tensor_value_info(w, init.data_type, list(init.dims)))
            q, scales = int8_weight(linear, (grams or {}).get(linear.name))
            shape = [1] * q.ndim
            shape[linear.out_axis] = -1
            self.weights[linear.name] = (w, (q.astype(np.float32) * scales.reshape(shape)).astype(np.float32))
        nodes = []
        for i, node in enumerate(proto.graph.node):
            nodes += inserted.get(i, [])
            nodes.append(node)
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        self.session = ort_session(proto.SerializeToString(), spinning=False)
        del proto
        off = {gate: np.zeros((), np.float32) for gate in [*self.gates.values(), *self.dynamic_gates.values()]}
        names = [o.name for o in self.session.get_outputs()]
        self.comparison = OutputComparison(names, feeds, [self.session.run(None, {**f, **off}) for f in feeds])
        self.metric = self.comparison.metric

    def error(self, layers: list[str], dynamic: list[str] = ()) -> float:
        """Mean output error with `layers` (names) at int8, `dynamic` at int8 with run-time activation
        ranges (layers with a dynamic gate), and the rest in float."""
        on, on_dynamic = set(layers), set(dynamic)
        gates = {gate: np.full((), name in on, np.float32) for name, gate in self.gates.items()}
        gates.update({gate: np.full((), name in on_dynamic, np.float32) for name, gate in self.dynamic_gates.items()})
        weights = dict(self.weights[name] for name in on | on_dynamic)
        return self.comparison.error([self.session.run(None, {**f, **gates, **weights}) for f in self.comparison.feeds])
