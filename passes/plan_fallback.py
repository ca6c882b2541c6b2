"""plan_fallback: choose which layers int8 QDQ leaves in float, from their measured sensitivity (analysis only).

For every Conv/MatMul/Gemm that `quantize_qdq` would quantize (a constant float weight, a float
activation input, a unique node name, not already `keep` in the context's plan), the model's output
error with only that layer at int8 (activation per tensor with the calibrated range, weight per
channel) is measured in ONNX Runtime on the last `measure_feeds` calibration feeds
(`onnxcomp.precision.probe.QDQProbe`: one session, one run per layer). With `activations = "auto"`,
each MatMul/Gemm is also measured with run-time (dynamic) activation ranges and gets whichever of
the two errs less (`dynamic` in the plan: no calibrated range to go stale when served data differs);
"dynamic" makes every MatMul/Gemm dynamic, "static" none. Errors are taken as additive: the most
sensitive layers are kept in float until the remaining layers' summed error is at most `error_ratio`
× the sum over all layers, never more than `max_fallback` (a fraction) of them, and never more than
`max_fallback_weights` of their weight elements (float layers cost time in proportion to their
weights: a cap on them is a cap on the slowdown). The error of the chosen mix is then measured.

Weights in the probe are int8 per channel, rounded as `weight_rounding` says (`gptq`: GPTQ's codes
on the Gram of each MatMul/Gemm input, as `quantize_qdq` writes them with the same option).
Requires: calibration ranges of the layers' activation inputs (its `statistic_requests`, and their
Grams with `gptq`; use the same `method`, `percentile`, `activation_dtype` and `weight_rounding`
as the `quantize_qdq` that follows).
Guarantees: the graph is unchanged; `context.precision_plan` marks the chosen layers `keep` (and the
dynamic ones `dynamic`), which `quantize_qdq` honours; the report lists every layer's measured
error(s), the fallback set, and the measured error of all-int8 and of the chosen mix.
"""

import onnx_ir as ir

from onnxcomp.algorithms.gptq import WEIGHT_ROUNDINGS, gptq_can_round
from onnxcomp.algorithms.quant_math import activation_qparams
from onnxcomp.calibration.collectors import METHODS
from onnxcomp.calibration.requests import GramRequest, RangeRequest
from onnxcomp.ir.graph import NodeFilter, is_float32_activation
from onnxcomp.ir.linears import Linear, linear_of
from onnxcomp.passes.base import CompressionPass
from onnxcomp.precision.measure import holdout_feeds
from onnxcomp.precision.plan import PrecisionPlan, Scheme
from onnxcomp.precision.probe import QDQProbe
from onnxcomp.progress import progress


class PlanFallback(CompressionPass):
    name = "plan_fallback"
    options = {
        "error_ratio": 0.3,
        "max_fallback": 0.25,
        "max_fallback_weights": 1.0,
        "method": "percentile",
        "percentile": 99.999,
        "activation_dtype": "uint8",
        "measure_feeds": 1,
        "measure_sequence": 128,
        "exclude": [],
        "activations": "static",
        "weight_rounding": "nearest",
    }
    needs_calibration = True

    def validate_options(self) -> None:
        o = self.opts
        for key in ("error_ratio", "max_fallback", "max_fallback_weights"):
            if isinstance(o[key], bool) or not isinstance(o[key], (int, float)) or not 0 <= o[key] <= 1:
                raise self.fail(f"{key} must be a number in [0, 1], not {o[key]!r}")
        if o["method"] not in METHODS:
            raise self.fail(f"unknown calibration method {o['method']!r} (choose from {', '.join(METHODS)})")
        if o["activations"] not in ("static", "dynamic", "auto"):
            raise self.fail(f"activations must be static, dynamic or auto, not {o['activations']!r}")
        if o["activations"] != "static" and (o["activation_dtype"] != "uint8" or self.context.target.symmetric_only):
            raise self.fail("dynamic activations are uint8 asymmetric: not with int8 activations or this target")
        if o["activation_dtype"] not in ("uint8", "int8"):
            raise self.fail(f"activation_dtype must be uint8 or int8, not {o['activation_dtype']!r}")
        if o["weight_rounding"] not in WEIGHT_ROUNDINGS:
            raise self.fail(f"weight_rounding must be 'nearest' or 'gptq', not {o['weight_rounding']!r}")
        for key in ("measure_feeds", "measure_sequence"):
            if o[key] < 1:
                raise self.fail(f"{key} must be a positive integer, not {o[key]!r}")

    def _layers(self, model: ir.Model) -> list[Linear]:
        node_filter = NodeFilter(self.opts["exclude"])
        node_filter.check_all_match(model)
        names = [node.name for node in model.graph]
        plan = self.context.precision_plan
        layers = []
        for node in model.graph:
            if node.domain or node.op_type not in ("Conv", "MatMul", "Gemm") or node_filter.excludes(node):
                continue
            if plan is not None and plan.scheme_for(node).kind == "keep":  # e.g. split_outliers' side paths
                continue
            linear = linear_of(node)
            if (
                linear is not None
                and node.name
                and names.count(node.name) == 1
                and linear.array.dtype.kind == "f"
                and linear.array.ndim >= 2
                and is_float32_activation(node.inputs[0])
            ):
                layers.append(linear)
        return layers

    def _gptq_inputs(self, layers: list[Linear]) -> dict[str, str]:
        """Layer name → input name, for the layers whose weights GPTQ rounds (`weight_rounding: gptq`)."""
        if self.opts["weight_rounding"] != "gptq":
            return {}
        return {linear.name: linear.node.inputs[0].name for linear in layers if gptq_can_round(linear)}

    def statistic_requests(self, model: ir.Model) -> list:
        layers = self._layers(model)
        ranges = sorted({RangeRequest(linear.node.inputs[0].name) for linear in layers})
        return ranges + [GramRequest(name) for name in sorted(set(self._gptq_inputs(layers).values()))]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        o = self.opts
        layers = self._layers(model)
        if not layers:
            raise self.fail("no Conv/MatMul/Gemm with a constant weight to plan")
        scheme = "asymmetric" if o["activation_dtype"] == "uint8" else "symmetric"
        qparams = {}
        for linear in layers:
            name = linear.node.inputs[0].name
            lo, hi = self.context.statistics.ranges[name].range(o["method"], float(o["percentile"]), scheme)
            qparams[name] = activation_qparams(lo, hi, o["activation_dtype"])
        probe = QDQProbe(
            model,
            layers,
            qparams,
            holdout_feeds(self.context.calibration, self.opts["measure_feeds"], self.opts["measure_sequence"]),
            dynamic=o["activations"] != "static",
            grams={layer: self.context.statistics.grams[name] for layer, name in self._gptq_inputs(layers).items()},
        )
        measured = []
        for linear in progress(layers, desc="int8 sensitivity", unit="layer"):
            entry = {"node": linear.name}
            if o["activations"] != "dynamic" or linear.name not in probe.dynamic_gates:
                entry["static_error"] = probe.error([linear.name])
            if linear.name in probe.dynamic_gates:
                entry["dynamic_error"] = probe.error([], [linear.name])
            entry["mode"] = min(("static", "dynamic"), key=lambda m: entry.get(f"{m}_error", float("inf")))
            entry["measured_error"] = entry[f"{entry['mode']}_error"]
            measured.append(entry)
        errors = {e["node"]: e["measured_error"] for e in measured}
        order = sorted(errors, key=lambda name: -errors[name])
        total = sum(errors.values())
        weights = {linear.name: linear.array.size for linear in layers}
        fallback: list[str] = []
        remaining, float_weights = total, 0
        while order[len(fallback) :] and remaining > o["error_ratio"] * total:
            name = order[len(fallback)]
            if len(fallback) + 1 > o["max_fallback"] * len(layers):
                break
            if float_weights + weights[name] > o["max_fallback_weights"] * sum(weights.values()):
                break
            remaining -= errors[name]
            float_weights += weights[name]
            fallback.append(name)
        dynamic = [e["node"] for e in measured if e["mode"] == "dynamic" and e["node"] not in fallback]
        static = [e["node"] for e in measured if e["mode"] == "static" and e["node"] not in fallback]
        plan = self.context.precision_plan or PrecisionPlan(Scheme("blockwise", 8, 128, True))
        for linear in layers:
            if linear.name in fallback:
                plan.nodes[linear.node] = Scheme("keep")
            elif linear.name in dynamic:
                plan.nodes[linear.node] = Scheme("dynamic")
        self.context.precision_plan = plan
        self.details = {
            "metric": probe.metric,
            "activations": o["activations"],
            "layers": sorted(measured, key=lambda e: -e["measured_error"]),
            "fallback": fallback,
            "dynamic": dynamic,
            "predicted_error": remaining,
            "measured_error_all_int8": probe.error([linear.name for linear in layers]),
            "measured_error_mixed": probe.error(static, dynamic),
        }
        return ir.passes.PassResult(model, modified=False)

    @classmethod
    def summary(cls, details: dict) -> str | None:
        dynamic = f", {len(details['dynamic'])} with dynamic activation ranges" if details.get("dynamic") else ""
        return (
            f"plan_fallback: {len(details['fallback'])} of {len(details['layers'])} layers kept in float{dynamic}; "
            f"measured error {details['measured_error_all_int8']:.4g} all int8 → {details['measured_error_mixed']:.4g}"
            f" ({details['metric']})"
        )
