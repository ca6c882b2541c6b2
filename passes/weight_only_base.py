"""What every weight-only pass (RTN, GPTQ, AWQ) shares: options, the layer scan, the plan, the report.

A weight-only pass rewrites every MatMul whose weight is a constant 2-D [K, N] (and every Gemm with
a constant B, transA = 0, alpha = beta = 1, as MatMul + Add), seen through `onnxcomp.ir.linears`.
Per layer, the scheme (bits, group, symmetric) comes from a precision plan: the context's plan
when one was set, else the presets' rule (`onnxcomp.precision.weight_only_plan`: LM heads at
`output_layer_bits`, symmetric). The codes the algorithm chooses are written by the format's
emitter (`onnxcomp.emit.blockwise`: MatMulNBits, DequantizeLinear blocks, MatMulInt4), which also
says which scale rule the algorithm must follow and shares tied embedding tables.
Targets (`context.target`): an unset `format` is the target's first weight-only format (ort-cpu:
matmulnbits, as before; tensorrt and portable: qdq); a format the target does not read, asymmetric
blocks on a symmetric-only target, or a bit width the target cannot block is refused before any
work; an unset `output_layer_bits` the target cannot store becomes the layers' bits. Bits a target
reads per channel but does not block (tensorrt: 8) are written per channel (`channel` scheme: one
block of all K rows per output column, an unblocked int8 DequantizeLinear over N): tensorrt's
LM head stays int8 (as on ort-cpu, in blocks there) and w8a16 runs on tensorrt.
"""

from collections import Counter
from typing import Any, ClassVar

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from onnxcomp.algorithms.blockwise import BITS, GROUP_SIZES, BlockQuantized, dequantize_blockwise, relative_error
from onnxcomp.emit.blockwise import BlockwiseEmitter
from onnxcomp.ir.folding import FALLBACKS
from onnxcomp.ir.linears import Linear, weight_only_linears
from onnxcomp.passes.base import CompressionPass
from onnxcomp.precision.plan import PrecisionPlan, Scheme, stored_scheme, weight_only_plan

COMMON_OPTIONS: dict[str, Any] = {
    "bits": 4,
    "group_size": 128,
    "symmetric": True,
    "format": "matmulnbits",
    "accuracy_level": 4,
    "exclude": [],
    "output_layer_bits": 8,
}


class WeightOnlyPass(CompressionPass):
    """Base of the weight-only passes. Subclasses set `name`, `algorithm`, `options` (starting from
    COMMON_OPTIONS) and implement `call`: scan with `targets`, quantize each layer with the
    scheme of `scheme_for`, then `emit` it and `finish`."""

    algorithm: ClassVar[str]

    def __init__(self, *args, **options):
        self.explicit = set(options)  # options the recipe or caller set (format/head bits follow the target)
        super().__init__(*args, **options)
        self.emitter = BlockwiseEmitter(self.opts["format"], self.opts["accuracy_level"])
        self.plan: PrecisionPlan | None = None

    def validate_options(self) -> None:
        o = self.opts
        if o["bits"] not in BITS:
            raise self.fail(f"bits must be one of {', '.join(map(str, BITS))}, not {o['bits']!r}")
        if o["group_size"] not in GROUP_SIZES:
            raise self.fail(f"group_size must be one of {', '.join(map(str, GROUP_SIZES))}, not {o['group_size']!r}")
        target = self.context.target
        if "format" not in self.explicit:
            o["format"] = target.weight_only_formats[0]
        if o["format"] not in target.weight_only_formats:
            raise self.fail(
                f"format must be one of {', '.join(target.weight_only_formats)} for target {target.name!r}, "
                f"not {o['format']!r}"
            )
        if "group_size" in self.explicit and o["group_size"] not in target.block_sizes:
            raise self.fail(
                f"group_size {o['group_size']} not accepted by target {target.name!r} "
                f"(block sizes {', '.join(map(str, target.block_sizes))})"
            )
        if target.symmetric_only and not o["symmetric"]:
            raise self.fail(f"target {target.name!r} reads symmetric blocks only (zero point 0); drop symmetric=false")
        if "output_layer_bits" not in self.explicit and not target.weight_only_layout(o["output_layer_bits"]):
            o["output_layer_bits"] = 0  # the LM head at the layers' bits (the target stores no other width)
        for bits in {o["bits"], o["output_layer_bits"] or o["bits"]}:
            if bits in BITS and not target.weight_only_layout(bits):  # other values are refused below
                raise self.fail(
                    f"target {target.name!r} reads {bits}-bit weight-only layers not at all "
                    f"(blocks: {target.block_bits}, per channel: {target.channel_bits})"
                )
        if o["format"] == "custom" and o["bits"] != 4:
            raise self.fail("format 'custom' (MatMulInt4) is 4-bit only; use matmulnbits or qdq for 8 bits")
        if o.get("algorithm", self.algorithm) != self.algorithm:
            raise self.fail(f"algorithm must be {self.algorithm!r}, not {o['algorithm']!r}")
        if o["output_layer_bits"] not in (0, *BITS):
            raise self.fail(
                f"output_layer_bits must be 0 (same as bits) or one of {', '.join(map(str, BITS))}, "
                f"not {o['output_layer_bits']!r}"
            )
        for flag in ("symmetric", "clip_search", "act_order", "sequential", "static_groups", "scale_only"):
            if flag in o and not isinstance(o[flag], bool):
                raise self.fail(f"{flag} must be true or false, not {o[flag]!r}")
        if not isinstance(o["exclude"], list) or not all(isinstance(p, str) for p in o["exclude"]):
            raise self.fail(f"exclude must be a list of op types or node-name globs, not {o['exclude']!r}")
        if o["accuracy_level"] not in (0, 1, 2, 3, 4):
            raise self.fail(f"accuracy_level must be 0-4, not {o['accuracy_level']!r}")
        if "fallback" in o and o["fallback"] not in FALLBACKS:
            raise self.fail(f"fallback must be one of {', '.join(FALLBACKS)}, not {o['fallback']!r}")

    @property
    def signed_scales(self) -> bool:
        """The emitter's scale rule: symmetric blocks may take negative scales (ONNX Runtime's rule)."""
        return self.emitter.signed_scales

    def scheme_for(self, linear: Linear) -> Scheme:
        """The plan's scheme, as the target stores it (`onnxcomp.precision.plan.stored_scheme`)."""
        return stored_scheme(self.plan.scheme_for(linear.node), linear.k, self.context.target)

    def targets(self, model: ir.Model) -> tuple[list[Linear], list[dict]]:
        """The linears to quantize, and [{node, reason}] for the ones skipped. Sets `self.plan`."""
        targets, skipped = weight_only_linears(model, self.opts["exclude"])
        o = self.opts
        self.plan = self.context.precision_plan or weight_only_plan(
            (linear.node for linear in targets), o["bits"], o["group_size"], o["symmetric"], o["output_layer_bits"]
        )
        kept = [linear for linear in targets if self.scheme_for(linear).kind in ("keep", "fp16")]
        reasons = {"keep": "kept in float by the precision plan", "fp16": "float16 by the precision plan (store_fp16)"}
        skipped += [
            {
                "node": linear.name,
                "reason": reasons.get(
                    self.plan.scheme_for(linear.node).kind,
                    f"K = {linear.k}: no whole block for target {self.context.target.name!r}",
                ),
            }
            for linear in kept
        ]
        return [linear for linear in targets if linear not in kept], skipped

    def layer_report(self, linear: Linear, weight: np.ndarray, q: BlockQuantized) -> dict:
        return {
            "node": linear.name,
            "weight": linear.weight.name,
            "shape_kn": [q.k, q.n],
            "bits": q.bits,
            "group_size": q.group,
            "symmetric": q.symmetric,
            **({"per_channel": True} if self.scheme_for(linear).kind == "channel" else {}),
            "algorithm": self.algorithm,
            "format": self.emitter.format_for(q.bits, self.scheme_for(linear).kind == "channel").name,
            "relative_weight_error": round(relative_error(dequantize_blockwise(q), weight), 6),
        }

    def emit(self, graph, names, linear: Linear, q: BlockQuantized, stored: dict) -> None:
        per_channel = self.scheme_for(linear).kind == "channel"
        self.emitter.emit(graph, names, linear, q, stored, per_channel=per_channel)

    def finish(
        self, model: ir.Model, layers: list[dict], skipped: list[dict], weights_quantized: int, **details
    ) -> ir.passes.PassResult:
        """Marks shared weights in the report, shares tied tables, sorts the graph, declares the op domains used."""
        readers = Counter(layer["weight"] for layer in layers)
        for layer in layers:
            if readers[layer["weight"]] > 1:
                layer["shared_weight"] = True  # one set of initializers serves every reader
        tied = self.emitter.share_tied_tables(model) if layers else []
        if layers:
            TopologicalSortPass()(model)
        if tied:
            details["tied_tables"] = tied
        for domain in self.emitter.domains(model):
            model.opset_imports.setdefault(domain, 1)
        self.details = {"layers": layers, "skipped": skipped, "weights_quantized": weights_quantized, **details}
        return ir.passes.PassResult(model, modified=bool(layers))

    @classmethod
    def summary(cls, details: dict) -> str | None:
        """One line: how many linears at which bits/groups, tied tables shared, skips."""
        layers = details.get("layers")
        if not layers:
            return None
        by_kind = Counter(
            Scheme(
                "channel" if x.get("per_channel") else "blockwise", x["bits"], x["group_size"], x["symmetric"]
            ).describe()
            for x in layers
        )
        text = (
            f"{cls.name}: {len(layers)} linears ("
            + ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items()))
            + ")"
        )
        if "groups_scaled" in details:
            text += f", {details['groups_scaled']} groups scaled by AWQ, {len(details['groups_not_scaled'])} not"
        shared = [t for t in details.get("tied_tables", []) if t["shared"]]
        if shared:
            text += f", tied table {shared[0]['table']!r} stored once with the LM head"
        if details["skipped"]:
            text += f"; {len(details['skipped'])} skipped (first: {details['skipped'][0]['reason']}; all in --report)"
        return text
