"""What a dependency group is: the tensors and slices that lose a channel together (see `groups`)."""

from dataclasses import dataclass, field
from fractions import Fraction

import onnx_ir as ir

from onnxcomp.ir.linears import Linear


@dataclass
class ConstantSlice:
    """A constant sliced with the group: `value` along `axis` (a per-channel vector or bias)."""

    value: ir.Value
    axis: int


@dataclass
class ShapeRewrite:
    """A Reshape's constant shape whose entry `index` is `per_channel` × the channel count."""

    value: ir.Value
    index: int
    per_channel: int


@dataclass
class ShapeEntry:
    """Entry `index` of `node`'s shape input (a Reshape's or Expand's) becomes `per` × the kept
    channel count. The shape may be a constant or a Concat of one-element pieces; it is replaced
    by a copy of the node's own, so a shape shared by several layers is not changed for the others."""

    node: ir.Node
    index: int
    per: Fraction


@dataclass
class PruneGroup:
    kind: str  # "ffn" (MatMul/Gemm producers) or "channels" (Conv producers)
    channels: int
    producers: list[Linear] = field(default_factory=list)
    consumers: list[Linear] = field(default_factory=list)
    repeat: int = 1  # consumer input rows per channel (H·W after a flatten, d for a head)
    block: int = 1  # producer output columns per channel (d for a head)
    constants: list[ConstantSlice] = field(default_factory=list)
    shapes: list[ShapeRewrite] = field(default_factory=list)
    values: dict[ir.Value, tuple[int, int | Fraction]] = field(
        default_factory=dict
    )  # value → (axis from end, per channel)
    entries: list[ShapeEntry] = field(default_factory=list)  # head counts in Reshape/Expand shapes
    kv_heads: int = 1  # grouped-query attention: channels (query heads) are kept in equal numbers per KV head
    readers: list[Linear] = field(default_factory=list)  # linears on the group's path that are not cut (K/V under GQA)
    depthwise: list[ir.Node] = field(default_factory=list)  # depthwise Convs passed: `group` = kept count
    residual: bool = False  # producers joined at a residual Add (one residual stream's channels)
    reason: str = ""  # why the group is skipped ("" when it can be pruned)

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.producers)
