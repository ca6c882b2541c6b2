"""A precision plan: the scheme each layer gets, as data that the quantization appliers read.

A `Scheme` is what one linear layer's weight becomes: blockwise int4/int8 (group size, symmetric
or with zero points), int8 per-channel, fp16, or kept as it is. A `PrecisionPlan` maps node names
to schemes over a default; `weight_only_plan` is the rule the weight-only presets have always
used (every linear at the pass's bits, group and symmetry; a linear whose output is a graph
output, an LM head, at `output_layer_bits` and always symmetric), so presets are default plans.
A sensitivity analysis (next) writes a plan per layer; the appliers do not change.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import onnx_ir as ir

from onnxcomp.errors import OnnxcompError

# blockwise: weight-only blocks; keep: float; fp16: the weight stored as float16 (read through a Cast);
# dynamic: int8 QDQ with activation ranges computed at run time; channel: weight-only, one block of all
# K rows per output column (an unblocked per-channel DequantizeLinear: TensorRT's int8 weight-only form)
KINDS = ("blockwise", "keep", "fp16", "dynamic", "channel")


@dataclass(frozen=True)
class Scheme:
    kind: str = "blockwise"
    bits: int = 4
    group: int = 128
    symmetric: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise OnnxcompError(f"precision plan: unknown scheme kind {self.kind!r} (known: {', '.join(KINDS)})")

    def describe(self) -> str:
        if self.kind == "blockwise":
            return f"int{self.bits} g{self.group} {'sym' if self.symmetric else 'asym'}"
        if self.kind == "channel":
            return f"int{self.bits} per-channel"
        return "int8 dynamic activations" if self.kind == "dynamic" else self.kind


@dataclass
class PrecisionPlan:
    default: Scheme
    layers: dict[str, Scheme] = field(default_factory=dict)  # by node name: plans written by hand or an analysis
    nodes: dict[ir.Node, Scheme] = field(default_factory=dict)  # by node: exact for unnamed or repeated names

    def scheme_for(self, node: ir.Node) -> Scheme:
        if node in self.nodes:
            return self.nodes[node]
        return self.layers.get(node.name, self.default) if node.name else self.default


def is_output_layer(node: ir.Node) -> bool:
    """A layer whose output is a graph output (an LM head: its error reaches the logits unmixed)."""
    return node.outputs[0].is_graph_output()


def weight_only_plan(
    nodes: Iterable[ir.Node], bits: int, group: int, symmetric: bool, output_layer_bits: int
) -> PrecisionPlan:
    """The presets' rule: `bits`/`group`/`symmetric` everywhere; output layers at `output_layer_bits`
    (0: the same bits) and symmetric: at 8 bits that costs nothing, and a tied embedding table can
    then read the LM head's codes."""
    default = Scheme("blockwise", bits, group, symmetric)
    plan = PrecisionPlan(default)
    if output_layer_bits:
        for node in nodes:
            if is_output_layer(node):
                plan.nodes[node] = replace(default, bits=output_layer_bits, symmetric=True)
    return plan


def stored_scheme(scheme: Scheme, k: int, target) -> Scheme:
    """A planned scheme for a linear with K input rows as `target` stores it: bits the target does not
    block but reads per channel (tensorrt: 8) become a `channel` scheme (group = K, symmetric); a group
    the target does not block by (tensorrt: 32), or on a whole-blocks target (portable, tensorrt) one
    that does not divide K, becomes the largest accepted one below it that does, else int8 per channel
    where the target has it, else the layer is kept in float."""
    if scheme.kind != "blockwise":
        return scheme
    channel = Scheme("channel", 8, k, True)
    if target.weight_only_layout(scheme.bits) == "channel":
        return replace(channel, bits=scheme.bits)
    if scheme.group in target.block_sizes and (not target.whole_blocks or k % scheme.group == 0):
        return scheme
    fits = [g for g in target.block_sizes if g <= scheme.group and k % g == 0]
    if fits:
        return replace(scheme, group=max(fits))
    return channel if target.weight_only_layout(8) == "channel" else Scheme("keep")
