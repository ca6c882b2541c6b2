"""quantize_qdq: int8 QuantizeLinear/DequantizeLinear insertion around linear operators.

Rewrites, for each Conv / MatMul / Gemm not excluded (placement policy `ort`):
- the constant weight → int8 per-channel symmetric codes + DequantizeLinear on the
  output-channel axis (Conv: 0, MatMul: last, Gemm: 0 with transB=1 else 1);
- each float activation input → QuantizeLinear → DequantizeLinear with per-tensor parameters
  (uint8 asymmetric or int8 symmetric) from calibration statistics, shared by all consumers
  that are quantized, while other consumers (e.g. residual Adds) keep the float tensor;
- Conv/Gemm bias → int32 with scale = input scale × weight scale, so kernels add it exactly;
- outputs of `quantize_outputs` op types (default Conv) → Q/DQ, so ONNX Runtime fuses
  DQ→Conv→Q into QLinearConv; DQ→MatMul without Q fuses into MatMulIntegerToFloat;
- shared scales: an activation reached through data-movement ops (Reshape, Transpose,
  MaxPool, Relu, …) from another quantized tensor reuses that tensor's scale and zero point,
  so ONNX Runtime can drop the DQ→op→Q pair and keep the data in int8.
MatMuls whose both inputs are activations (attention) are left in float unless
`activation_matmul` is set.
Layers a precision plan marks `keep` (`plan_fallback`) stay in float, like excluded ones.
Dynamic activations (`activations = "dynamic"`, or a plan's `dynamic` scheme for a layer): a
MatMul/Gemm input gets DynamicQuantizeLinear → DequantizeLinear instead (uint8, each tensor's own
range at run time: no calibration range, nothing clipped, robust when the served data differs from
the calibration data; ONNX Runtime fuses it into DynamicQuantizeMatMul); its bias stays float.
Convs stay static. Not for symmetric-only targets (DynamicQuantizeLinear is uint8).
Targets (`context.target`): an unset `activation_dtype` is the target's first activation dtype
(ort-cpu: uint8, as before; tensorrt: int8, zero point 0); a dtype the target does not accept is
refused. For a symmetric-only target (TensorRT's placement): no output Q/DQ unless
`quantize_outputs` is set, biases stay float (TensorRT dequantizes int8/int4 only), and the input
of a residual Add that does not come from a quantized Conv gets Q/DQ, so Conv+Add fuses; a MatMul
or Gemm whose input is one-sided (calibrated min > -max/16, e.g. after GELU: a symmetric int8 scale
wastes half its codes) keeps a float activation (`one_sided_float`; MiniLM: cosine 0.9865 → 0.9935,
see benchmarks/targets.py); its weight is int8 per channel, weight-only, where the target runs that
(`one_sided_weights`, None = the target decides: tensorrt's int8 weight-only per channel), else float.
Convs after ReLU stay int8, as TensorRT's own placement does.
Weight rounding (`weight_rounding`): `nearest` (default) rounds each int8 weight to its nearest
code; `gptq` keeps the same per-channel scales but lets GPTQ choose the MatMul/Gemm codes
(`onnxcomp.algorithms.gptq.gptq_per_channel`: each input row's rounding error pushed onto the rows
not yet rounded, weighted by the Gram H = 2XᵀX/rows of the layer's float calibration input, asked
for as a `GramRequest`), which lowers the output error where SmoothQuant has made weight rows
uneven. Convs keep nearest rounding.
Where the target says `unsigned_int8_weights` (ort-cpu), the int8 codes are stored as uint8 + 128
with zero point 128 — the same weights — because ONNX Runtime's uint8 × int8 x86 kernel saturates
on CPUs without VNNI (`onnxcomp.emit.targets`), while its uint8 × uint8 kernel is exact everywhere.
`weight_dtype: int8` keeps int8 storage (faster on those CPUs: MiniLM `w8a8-smoothquant` 0.80× fp32
against 0.96× on an AVX2 EPYC, at the cost of saturation); `uint8` asks for the unsigned form.
LayerNorm, Softmax and the attention core (activation MatMuls) stay float on every target.
Requires: range statistics of every quantized activation (its `statistic_requests`), collected by
the pass manager at the `calibrate` step before it, or just before it runs.
Guarantees: a valid opset ≥ 13 model; weight error ≤ half a step per channel; activation error
bounded by the calibrated range (values outside it are clipped).
"""

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.algorithms.gptq import WEIGHT_ROUNDINGS, gptq_can_round, int8_weight
from onnxcomp.algorithms.quant_math import activation_qparams, quantize_bias
from onnxcomp.calibration.collectors import METHODS
from onnxcomp.calibration.requests import GramRequest, RangeRequest
from onnxcomp.emit.qdq import dequantized_constant, dynamic_qdq_pair, qdq_pair
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import NameAllocator, NodeFilter, constant_array, is_float32_activation
from onnxcomp.ir.linears import linear_of
from onnxcomp.passes.base import CompressionPass

SHARED_SCALE_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Relu", "Identity"}
SUPPORTED_OPS = {"Conv", "MatMul", "Gemm"}
ONE_SIDED = 1 / 16  # an activation whose calibrated minimum is above -max/16 is "one-sided" (e.g. after GELU)


class QuantizeQDQ(CompressionPass):
    name = "quantize_qdq"
    options = {
        "op_types": ["Conv", "MatMul", "Gemm"],
        "exclude": [],
        "activation_dtype": "uint8",
        "method": "percentile",
        "percentile": 99.999,
        "quantize_outputs": ["Conv"],
        "activation_matmul": False,
        "one_sided_float": None,  # None: the target decides (true when it is symmetric-only)
        "one_sided_weights": None,  # those layers' weights int8 per channel; None: when the target runs that
        "activations": "static",
        "weight_rounding": "nearest",
        "weight_dtype": None,  # "int8", or "uint8" (the same codes + 128, zero point 128); None: the target's
    }

    def __init__(self, *args, **options):
        self.explicit = set(options)  # options the recipe or caller set (the rest follow the target)
        super().__init__(*args, **options)
        target = self.context.target
        if "activation_dtype" not in self.explicit:
            self.opts["activation_dtype"] = target.activation_dtypes[0]
        if target.symmetric_only and "quantize_outputs" not in self.explicit:
            self.opts["quantize_outputs"] = []

    def validate_options(self) -> None:
        bad = sorted(set(self.opts["op_types"]) - SUPPORTED_OPS)
        if bad:
            raise OnnxcompError(
                f"pass 'quantize_qdq': op_types {bad[0]!r} not supported (choose from {sorted(SUPPORTED_OPS)})"
            )
        target = self.context.target
        if "activation_dtype" in self.explicit and self.opts["activation_dtype"] not in target.activation_dtypes:
            dtypes = " or ".join(target.activation_dtypes)
            raise self.fail(
                f"activation_dtype must be {dtypes} for target {target.name!r}, not {self.opts['activation_dtype']!r}"
            )
        if self.opts["activations"] not in ("static", "dynamic"):
            raise self.fail(f"activations must be 'static' or 'dynamic', not {self.opts['activations']!r}")
        if self.opts["activations"] == "dynamic" and (
            target.symmetric_only or self.opts["activation_dtype"] != "uint8"
        ):
            raise self.fail(f"dynamic activations are uint8 asymmetric, which target {target.name!r} does not take")
        if self.opts["method"] not in METHODS:
            raise self.fail(f"unknown calibration method {self.opts['method']!r} (choose from {', '.join(METHODS)})")
        for flag in ("one_sided_float", "one_sided_weights"):
            if self.opts[flag] not in (None, True, False):
                raise self.fail(f"{flag} must be true or false, not {self.opts[flag]!r}")
        if self.opts["one_sided_weights"] and target.weight_only_layout(8) is None:
            raise self.fail(f"one_sided_weights: target {target.name!r} runs no int8 weight-only layers")
        weight_dtype = self.opts["weight_dtype"]
        if weight_dtype not in (None, "int8", "uint8"):
            raise self.fail(f"weight_dtype must be 'int8' or 'uint8', not {weight_dtype!r}")
        if weight_dtype is not None and weight_dtype not in target.weight_dtypes:
            raise self.fail(f"weight_dtype {weight_dtype!r} is not read by target {target.name!r}")
        if self.opts["weight_rounding"] not in WEIGHT_ROUNDINGS:
            raise self.fail(f"weight_rounding must be 'nearest' or 'gptq', not {self.opts['weight_rounding']!r}")
        if not 0 < float(self.opts["percentile"]) <= 100:
            raise OnnxcompError(f"pass 'quantize_qdq': percentile must be in (0, 100], not {self.opts['percentile']}")

    # -- planning ------------------------------------------------------------------------
    def _targets(self, model: ir.Model) -> list[ir.Node]:
        node_filter = NodeFilter(self.opts["exclude"])
        node_filter.check_all_match(model)
        targets, excluded = [], []
        plan = self.context.precision_plan
        for node in model.graph:
            if node.domain != "" or node.op_type not in self.opts["op_types"]:
                continue
            kept = plan is not None and plan.scheme_for(node).kind == "keep"  # e.g. plan_fallback's choice
            (excluded if node_filter.excludes(node) or kept else targets).append(node)
        self.details["excluded"] = [n.name for n in excluded]
        return targets

    def _activation_inputs(self, node: ir.Node) -> list[int]:
        """Indices of the float activation inputs to quantize; [] when the node is skipped."""
        if not is_float32_activation(node.inputs[0]):
            return []
        weight = node.inputs[1] if len(node.inputs) > 1 else None
        if constant_array(weight) is not None:
            return [0]
        if node.op_type == "MatMul" and self.opts["activation_matmul"] and is_float32_activation(weight):
            return [0, 1]
        return []

    def _plan(self, model: ir.Model):
        """(target node → activation input indices, values whose outputs are quantized)."""
        plan = {}
        for node in self._targets(model):
            indices = self._activation_inputs(node)
            if indices:
                plan[node] = indices
        outputs = [n.outputs[0] for n in plan if n.op_type in self.opts["quantize_outputs"]]
        if self.context.target.symmetric_only:
            plan.update(self._residual_adds(model, plan))
        return plan, outputs

    @staticmethod
    def _residual_adds(model: ir.Model, plan: dict) -> dict:
        """Add(Conv output, x) with x a float activation from elsewhere → {Add: [index of x]}: the
        Q/DQ TensorRT needs on the residual branch to fuse the Add into the int8 Conv."""
        convs = {n.outputs[0] for n in plan if n.op_type == "Conv"}
        adds = {}
        for node in model.graph:
            if node.op_type != "Add" or node.domain != "" or len(node.inputs) != 2:
                continue
            sides = [value in convs for value in node.inputs]
            if sum(sides) == 1:
                other = sides.index(False)
                if is_float32_activation(node.inputs[other]):
                    adds[node] = [other]
        return adds

    def _is_dynamic(self, node: ir.Node) -> bool:
        """Activation ranges of this layer's inputs computed at run time (MatMul/Gemm only)."""
        if node.op_type not in ("MatMul", "Gemm"):
            return False
        plan = self.context.precision_plan
        if plan is not None and plan.scheme_for(node).kind == "dynamic":
            if self.context.target.symmetric_only:
                raise self.fail(
                    f"{node.name}: a dynamic scheme is uint8, which target {self.context.target.name!r} does not take"
                )
            return True
        return self.opts["activations"] == "dynamic"

    def _values_to_quantize(self, model: ir.Model) -> list[ir.Value]:
        """The activations quantized with calibrated (static) ranges, each once, in order."""
        plan, outputs = self._plan(model)
        inputs = [n.inputs[i] for n, idx in plan.items() if not self._is_dynamic(n) for i in idx]
        return list(dict.fromkeys(inputs + outputs))

    def _gptq_layers(self, plan: dict) -> list[ir.Node]:
        """The planned MatMul/Gemm layers whose int8 weights GPTQ rounds (`weight_rounding: gptq`)."""
        if self.opts["weight_rounding"] != "gptq":
            return []
        return [node for node in plan if gptq_can_round(linear_of(node))]

    def statistic_requests(self, model: ir.Model) -> list:
        ranges = [RangeRequest(v.name) for v in self._values_to_quantize(model)]
        grams = {node.inputs[0].name for node in self._gptq_layers(self._plan(model)[0])}
        return ranges + [GramRequest(name) for name in sorted(grams)]

    @staticmethod
    def _scale_root(value: ir.Value, quantized: set[ir.Value]) -> ir.Value:
        """The nearest upstream quantized tensor reached through data-movement ops, else `value`."""
        current = value
        while (producer := current.producer()) is not None and producer.op_type in SHARED_SCALE_OPS:
            current = producer.inputs[0]
            if current is None:
                break
            if current in quantized:
                return current
        return value

    # -- rewriting -----------------------------------------------------------------------
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        plan, outputs = self._plan(model)
        values = self._values_to_quantize(model)
        quantized_values = {v for v in values}
        stats = self.context.statistics.ranges

        dtype = self.opts["activation_dtype"]
        qparams: dict[ir.Value, tuple] = {}
        ranges = {}
        one_sided = set()
        for value in values:
            root = self._scale_root(value, quantized_values)
            st = stats[root.name]
            scheme = "asymmetric" if dtype == "uint8" else "symmetric"
            lo, hi = st.range(self.opts["method"], float(self.opts["percentile"]), scheme)
            if scheme == "symmetric" and -st.min < ONE_SIDED * st.max:
                one_sided.add(value)
            scale, zero_point = activation_qparams(lo, hi, dtype)
            qparams[value] = (scale, zero_point)
            ranges[value.name] = {
                "range": [round(lo, 6), round(hi, 6)],
                "scale": float(scale),
                "zero_point": int(zero_point),
                **({"shared_with": root.name} if root is not value else {}),
            }

        float_one_sided = self.opts["one_sided_float"]
        if float_one_sided is None:
            float_one_sided = self.context.target.symmetric_only
        if float_one_sided and one_sided:
            kept = [n for n, idx in plan.items() if n.op_type != "Conv" and any(n.inputs[i] in one_sided for i in idx)]
            weight_only = self.opts["one_sided_weights"]
            if weight_only is None:
                weight_only = self.context.target.weight_only_layout(8) == "channel"
            for node in kept:
                if weight_only:
                    plan[node] = []  # float activation, int8 per-channel weight
                else:
                    del plan[node]
            self.details["float_one_sided"] = [n.name for n in kept]
            if weight_only and kept:
                self.details["one_sided_weights"] = "int8 per channel (weight-only)"
            outputs = [v for v in outputs if plan.get(v.producer())]

        names = NameAllocator(graph)
        dequantized: dict[ir.Value, ir.Value] = {}  # float value -> its DequantizeLinear output
        source_of: dict[ir.Value, ir.Value] = {}  # DequantizeLinear output -> the float value
        new_nodes: list[ir.Node] = []

        dynamic: dict[ir.Value, ir.Value] = {}  # float value -> its dynamic DequantizeLinear output

        def quantize_dynamic(value: ir.Value) -> ir.Value:
            if value not in dynamic:
                pair = dynamic_qdq_pair(graph, names, value)
                new_nodes.extend(pair)
                dynamic[value] = pair[1].outputs[0]
            return dynamic[value]

        def quantize_activation(value: ir.Value) -> ir.Value:
            if value not in dequantized:
                q, dq = qdq_pair(graph, names, value, *qparams[value])
                new_nodes.extend([q, dq])
                dequantized[value] = dq.outputs[0]
                source_of[dq.outputs[0]] = value
            return dequantized[value]

        grams = self.context.statistics.grams  # by each layer's input name, read before any rewiring
        gptq = {node: grams[node.inputs[0].name] for node in self._gptq_layers(plan)}

        # Outputs of e.g. Conv: every consumer reads the quantized tensor.
        for value in outputs:
            dq_value = quantize_activation(value)
            quantize_node = dq_value.producer().inputs[0].producer()
            for use in list(value.uses()):
                if use.node is not quantize_node:
                    use.node.replace_input_with(use.idx, dq_value)

        weight_cache: dict[tuple[str, int], tuple[ir.Value, np.ndarray]] = {}
        layers = []
        for node, indices in plan.items():
            is_dynamic = self._is_dynamic(node)
            for i in indices:
                if is_dynamic:
                    node.replace_input_with(i, quantize_dynamic(source_of.get(node.inputs[i], node.inputs[i])))
                elif node.inputs[i] not in source_of:  # not already rewired as a quantized output
                    node.replace_input_with(i, quantize_activation(node.inputs[i]))
            linear = linear_of(node)
            weight = node.inputs[1]
            layer = {"node": node.name, "op": node.op_type, **({"activations": "dynamic"} if is_dynamic else {})}
            if not indices:
                layer["activations"] = "float (weight-only)"
            if linear is not None and linear.array.dtype.kind == "f" and linear.array.ndim >= 2:
                axis = linear.out_axis
                key = (weight.name, axis)
                if key not in weight_cache:
                    q, scales = int8_weight(linear, gptq.get(node))
                    if node in gptq:
                        layer["weight_rounding"] = "gptq"
                    if self._unsigned_weights():  # the same values, exact in ORT's uint8 × uint8 kernel
                        q = (q.astype(np.int16) + 128).astype(np.uint8)
                        zero_points = np.full(scales.shape, 128, np.uint8)
                    else:
                        zero_points = np.zeros(scales.shape, np.int8)
                    dq = dequantized_constant(graph, names, weight.name, q, scales, zero_points, axis)
                    new_nodes.append(dq)
                    weight_cache[key] = (dq.outputs[0], scales)
                dq_weight, scales = weight_cache[key]
                node.replace_input_with(1, dq_weight)
                layer.update({"weight": weight.name, "axis": axis, "channels": int(len(scales))})
                input_value = source_of.get(node.inputs[0])
                if input_value is not None and not self.context.target.symmetric_only:
                    if not self._quantize_bias(graph, names, node, scales, qparams[input_value][0], new_nodes):
                        layer["bias"] = "float (int32 would overflow)"
            layers.append(layer)

        for node in new_nodes:
            graph.append(node)
        TopologicalSortPass()(model)
        self.details.update({"quantized_nodes": len(layers), "activations": ranges, "layers": layers})
        return ir.passes.PassResult(model, modified=bool(new_nodes))

    def _unsigned_weights(self) -> bool:
        if self.opts["weight_dtype"] is None:
            return self.context.target.unsigned_int8_weights
        return self.opts["weight_dtype"] == "uint8"

    @staticmethod
    def _quantize_bias(graph, names, node, weight_scales, input_scale, new_nodes) -> bool:
        """Conv/Gemm constant 1-D bias → int32 + DequantizeLinear (scale = input × weight scale).

        Returns False only when a bias exists but stays float because int32 would overflow.
        """
        if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3:
            return True
        bias = node.inputs[2]
        array = constant_array(bias)
        if array is None or array.ndim != 1 or len(weight_scales) != len(array):
            return True
        quantized = quantize_bias(array, input_scale, weight_scales)
        if quantized is None:
            return False
        dq = dequantized_constant(graph, names, bias.name, *quantized, zero_points=None, axis=0)
        new_nodes.append(dq)
        node.replace_input_with(2, dq.outputs[0])
        return True
