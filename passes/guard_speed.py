"""guard_speed: the emitted model is no slower than its input; quantized layers that slow it down go back to float.

Measures in ONNX Runtime on this machine (2 intra-op threads, interleaved runs, `onnxcomp.runtime`) the
latency of the input model and of the compressed one at the timing shapes: `shapes` ({input: [dims]};
inputs not named there take the batch and sequence of the first one given), else one row of the first
calibration sample (else batch 1, sequence 128) and, for a language model (a dynamic sequence axis
and logits), the same row cut to one position: a generation step (weight-only int4 is slower than float on a 256-token
prompt on CPU but about twice as fast per token). The latency ratio is the geometric mean over the
shapes. When the compressed model takes more than `latency_budget` × the input's time (+ `tolerance`,
the timing noise allowed), its quantized layers (`onnxcomp.precision.revert`), grouped by kind
(operator and weight shape: one kernel), are tried back in float one kind at a time; the kinds whose
float version is faster go back, largest gain first, until the budget is met; if it still is not,
every quantized layer goes back. The decision is cached per (model, shapes, options, ONNX Runtime
version, machine), so repeated builds on one machine give identical bytes; builds that must not
depend on timing skip the pass (`--no-speed-guard`, `speed_guard=False`, or ONNXCOMP_SPEED_GUARD=0).

Requires: `context.reference`, the input model (set by `compress`); the ort-cpu target (other targets
are not timed here: the pass reports that and changes nothing). Guarantees: outputs unchanged but for
the reverted layers' quantization noise; the report gives the measured ratio before and after, each
trial, and the layers reverted.
"""

import json
import os
import platform
import re
import time

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from onnxcomp.cache import cache_dir, digest, read_cached, write_atomic
from onnxcomp.emit.targets import ORT_CPU
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import initializer_bytes, input_specs
from onnxcomp.ir.modelio import serialize
from onnxcomp.passes.base import CompressionPass
from onnxcomp.precision.measure import output_metric
from onnxcomp.precision.revert import layer_kind, quantized_layers, revert
from onnxcomp.runtime import measure_latency, ort_session, synthetic_feed

_RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x?\s*$", re.IGNORECASE)
TIMED_BYTES_LIMIT = 1_800_000_000  # larger models are not serialized for timing (the 2 GB protobuf limit)


def parse_latency_budget(value) -> float:
    """'0.7x' / 0.7 → 0.7 (a fraction of the input model's latency)."""
    match = _RATIO.match(str(value)) if not isinstance(value, bool) else None
    if match is None or float(match.group(1)) <= 0:
        raise OnnxcompError(
            f"latency budget must be a positive fraction of the input's latency like 0.7x, not {value!r}"
        )
    return float(match.group(1))


def parse_timing_shapes(text: str) -> dict[str, list[int]]:
    """'input_ids:1x128;attention_mask:1x128' (or with commas) → {'input_ids': [1, 128], ...}."""
    shapes = {}
    for item in filter(None, (part.strip() for part in re.split(r"[;,]", text))):
        name, _, dims = item.rpartition(":")
        if not name or not re.fullmatch(r"\d+(x\d+)*", dims.strip()):
            raise OnnxcompError(f"--shapes: expected name:DIMxDIM (e.g. input_ids:1x128), not {item!r}")
        shapes[name.strip()] = [int(d) for d in dims.strip().split("x")]
    if not shapes:
        raise OnnxcompError("--shapes: no shape given (e.g. input_ids:1x128)")
    return shapes


def timing_feeds(proto, shapes: dict, calibration) -> list[dict]:
    """The feeds latency is measured on (see the module docstring)."""
    specs = input_specs(proto)
    known = {spec.name for spec in specs}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise OnnxcompError(f"--shapes: the model has no input {unknown[0]!r} (inputs: {', '.join(sorted(known))})")
    feed = synthetic_feed(specs, 1, 128)
    if shapes:
        first = next(iter(shapes.values()))  # inputs not given follow its batch and sequence
        feed = synthetic_feed(specs, first[0], first[1] if len(first) > 1 else 128)
        for spec in specs:
            dims = shapes.get(spec.name)
            if dims is None:
                continue
            if len(dims) != len(spec.shape) or any(d is not None and d != n for d, n in zip(spec.shape, dims)):
                raise OnnxcompError(
                    f"--shapes: {spec.name} is {_shape_text(spec.shape)}, which {'x'.join(map(str, dims))} does not fit"
                )
            feed[spec.name] = synthetic_feed([type(spec)(spec.name, spec.dtype, tuple(dims))])[spec.name]
        return [feed]
    if calibration is not None:
        for sample in calibration:
            feed = {name: np.asarray(array)[:1] for name, array in sample.items()}
            break
    sequence_axes = {spec.name: [i for i, d in enumerate(spec.shape) if i > 0 and d is None] for spec in specs}
    if not any(sequence_axes.values()) or output_metric([o.name for o in proto.graph.output]) != "kl":
        return [feed]  # no sequence, or not a language model (no logits): no generation step
    return [feed, {name: _first_position(array, sequence_axes.get(name, [])) for name, array in feed.items()}]


def _first_position(array: np.ndarray, axes: list[int]) -> np.ndarray:
    """`array` cut to length 1 along `axes` (a one-token step of a sequence input)."""
    return array[tuple(slice(0, 1) if i in axes else slice(None) for i in range(array.ndim))]


def _shape_text(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


class GuardSpeed(CompressionPass):
    name = "guard_speed"
    options = {"latency_budget": "1.0x", "tolerance": 0.05, "shapes": {}, "runs": 30, "warmup": 5}

    def validate_options(self) -> None:
        o = self.opts
        self.budget = parse_latency_budget(o["latency_budget"])
        if (
            isinstance(o["tolerance"], bool)
            or not isinstance(o["tolerance"], int | float)
            or not 0 <= o["tolerance"] < 1
        ):
            raise self.fail(f"tolerance must be a number in [0, 1), not {o['tolerance']!r}")
        if not isinstance(o["shapes"], dict) or not all(
            isinstance(d, list | tuple) and d and all(isinstance(n, int) and n > 0 for n in d)
            for d in o["shapes"].values()
        ):
            raise self.fail(f"shapes must map input names to lists of positive dims, not {o['shapes']!r}")
        for key in ("runs", "warmup"):
            if o[key] < (1 if key == "runs" else 0):
                raise self.fail(f"{key} must be {'positive' if key == 'runs' else 'at least 0'}, not {o[key]!r}")

    def preflight(self, model: ir.Model) -> None:
        if self.context.reference is not None:
            timing_feeds(self.context.reference, self.opts["shapes"], None)  # shapes that do not fit: fail now

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        reference = self.context.reference
        if reference is None:
            raise self.fail("needs the input model to time against (run it through onnxcomp.compress)")
        if self.context.target is not ORT_CPU:
            return self._skipped(model, f"target {self.context.target.name} is not timed on this machine")
        if initializer_bytes(model) > TIMED_BYTES_LIMIT:
            return self._skipped(model, "models over 2 GB are not timed")
        layers = quantized_layers(model)
        if not layers:
            return self._skipped(model, "no quantized layer to fall back")
        feeds = timing_feeds(reference, self.opts["shapes"], self.context.calibration)
        self.details = {
            "shapes": [{name: list(np.shape(array)) for name, array in feed.items()} for feed in feeds],
            "latency_budget": self.budget,
        }
        data = serialize(ir.to_proto(model))
        key = digest(
            data,
            json.dumps({k: self.opts[k] for k in ("latency_budget", "tolerance")}, sort_keys=True),
            json.dumps(self.details["shapes"], sort_keys=True),
            ort.__version__,
            platform.machine(),
            platform.processor(),
            str(os.cpu_count()),
        )
        path = cache_dir("speed_guard") / f"{key}.json"
        if self.context.use_cache and path.exists():
            decision = read_cached(path, lambda p: json.loads(p.read_text()))
            decision["cached"] = str(path)
        else:
            decision = self._decide(model, data, layers, feeds)
            if self.context.use_cache:
                write_atomic(path, lambda fh: fh.write(json.dumps(decision).encode()))
        chosen = [layers[i] for i in decision["reverted"]]
        if chosen:
            revert(model, chosen)
        self.details.update(decision)
        self.details["reverted_layers"] = [node.name for node in chosen]
        self.details["met"] = decision["after"] <= self.budget + self.opts["tolerance"]
        return ir.passes.PassResult(model, modified=bool(chosen))

    def _skipped(self, model: ir.Model, reason: str) -> ir.passes.PassResult:
        self.details = {"skipped": reason}
        return ir.passes.PassResult(model, modified=False)

    def _decide(self, model: ir.Model, data: bytes, layers: list[ir.Node], feeds: list[dict]) -> dict:
        """Which layers go back to float: indices into `layers`, with every measurement taken."""
        o = self.opts
        threshold = self.budget + o["tolerance"]
        try:
            timer = _Timer(serialize(self.context.reference), feeds, o["runs"], o["warmup"])
            before = timer.ratio(data)
        except OnnxcompError:
            raise
        except Exception as exc:  # ONNX Runtime refusing the timing shapes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise self.fail(f"cannot time the model at {self.details['shapes']} ({first}); set --shapes") from None
        decision = {"before": before, "after": before, "reverted": [], "trials": [], "per_shape": timer.last}
        if before <= threshold:
            return decision
        kinds: dict[str, list[int]] = {}
        for index, node in enumerate(layers):
            kinds.setdefault(layer_kind(node), []).append(index)
        gains = {}
        for kind, indices in kinds.items():
            ratio = timer.ratio(_reverted_bytes(model, layers, indices))
            decision["trials"].append({"revert": kind, "layers": len(indices), "ratio": ratio})
            gains[kind] = before - ratio
        reverted: list[int] = []
        for kind in sorted(gains, key=lambda k: -gains[k]):
            if gains[kind] <= o["tolerance"] / 2 or decision["after"] <= threshold:
                break
            candidate = sorted(reverted + kinds[kind])
            ratio = timer.ratio(_reverted_bytes(model, layers, candidate))
            decision["trials"].append({"revert": f"+ {kind}", "layers": len(candidate), "ratio": ratio})
            if ratio < decision["after"]:
                reverted, decision["after"] = candidate, ratio
        if decision["after"] > threshold and len(reverted) < len(layers):
            everything = list(range(len(layers)))
            ratio = timer.ratio(_reverted_bytes(model, layers, everything))
            decision["trials"].append({"revert": "every quantized layer", "layers": len(layers), "ratio": ratio})
            if ratio < decision["after"]:
                reverted, decision["after"] = everything, ratio
        decision["reverted"] = reverted
        return decision

    @classmethod
    def summary(cls, details: dict) -> str | None:
        if "skipped" in details:
            return f"guard_speed: not timed ({details['skipped']})"
        shapes = " and ".join(
            ",".join(f"{k}:{'x'.join(map(str, v))}" for k, v in feed.items()) for feed in details["shapes"]
        )
        line = f"guard_speed: latency {details['before']:.2f}x the input's at {shapes}"
        if details["reverted_layers"]:
            line += f" → {details['after']:.2f}x with {len(details['reverted_layers'])} layer(s) back in float"
        if not details["met"]:
            line += f"; budget {details['latency_budget']:.2f}x missed"
        return line + (" (decision from the cache)" if details.get("cached") else "")


class _Timer:
    """Latency of candidate models relative to the input model: per feed, one interleaved measurement;
    the ratio is the geometric mean over the feeds. Small models get more runs: at least `runs`, and
    enough for about `MIN_SECONDS` per model and feed."""

    MIN_SECONDS = 0.5
    MAX_RUNS = 3000

    def __init__(self, reference: bytes, feeds: list[dict], runs: int, warmup: int):
        self.reference = ort_session(reference, 2, spinning=False)
        self.feeds, self.warmup, self.runs = feeds, warmup, []
        for feed in feeds:
            start = time.perf_counter()
            for _ in range(max(warmup, 1)):
                self.reference.run(None, feed)
            each = (time.perf_counter() - start) / max(warmup, 1)
            self.runs.append(int(min(self.MAX_RUNS, max(runs, self.MIN_SECONDS / max(each, 1e-6)))))
        self.last: list[float] = []

    def ratio(self, data: bytes) -> float:
        sessions = {"input": self.reference, "output": ort_session(data, 2, spinning=False)}
        self.last = []
        for feed, runs in zip(self.feeds, self.runs):
            latency = measure_latency(sessions, feed, runs=runs, warmup=self.warmup)
            self.last.append(round(latency["output"]["median_ms"] / latency["input"]["median_ms"], 4))
        return round(float(np.exp(np.mean(np.log(self.last)))), 4)


def _reverted_bytes(model: ir.Model, layers: list[ir.Node], indices: list[int]) -> bytes:
    """The serialized model with `layers[indices]` back in float (the model itself is untouched)."""
    copy = ir.serde.deserialize_model(ir.to_proto(model))
    copy_layers = quantized_layers(copy)
    revert(copy, [copy_layers[i] for i in indices])
    return serialize(ir.to_proto(copy))
