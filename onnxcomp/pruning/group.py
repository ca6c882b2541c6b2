"""What a dependency group is: the tensors and slices that lose a channel together (see `groups`)."""

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.linears import Linear


@dataclass
class Window:
    """Where a tensor carries only part of a group's channels, or more than them.

    Channels `lo` … `hi`−1 of the group (a part of a channel Split) sit in the tensor's channel
    axis after the channels of the earlier inputs of `concat` (input `index`, Concat axis `axis`,
    non-negative), and the other inputs' channels stay. The offset and the width are read from the
    Concat inputs' shapes when the group is cut, so a group cut before (another input) is seen."""

    lo: int
    hi: int
    concat: ir.Node | None = None
    index: int = 0
    axis: int = 0

    def indices(self, keep: np.ndarray) -> np.ndarray:
        """The tensor's channels kept when the group keeps `keep` (sorted group indices)."""
        local = keep[(keep >= self.lo) & (keep < self.hi)] - self.lo
        if self.concat is None:
            return local
        dims = [int(v.shape[self.axis]) for v in self.concat.inputs]
        offset, total = sum(dims[: self.index]), sum(dims)
        return np.concatenate([np.arange(offset), offset + local, np.arange(offset + self.hi - self.lo, total)]).astype(
            np.int64
        )

    def width(self) -> int:
        """Channels of the tensor (the group's part, plus the other Concat inputs')."""
        if self.concat is None:
            return self.hi - self.lo
        return sum(int(v.shape[self.axis]) for v in self.concat.inputs)


@dataclass
class ConstantSlice:
    """A constant sliced with the group: `value` along `axis` (a per-channel vector or bias)."""

    value: ir.Value
    axis: int
    window: Window | None = None  # on a Concat's output or a Split's part


@dataclass
class SplitSizes:
    """A Split of the group's channels: its constant sizes become the kept count of each part."""

    node: ir.Node
    bounds: list[tuple[int, int]]  # group channels lo … hi−1 per output


@dataclass
class ShapeRewrite:
    """A Reshape's constant shape whose entry `index` is `per_channel` × the channel count."""

    value: ir.Value
    index: int
    per_channel: int
    window: Window | None = None


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
    blocks: dict = field(default_factory=dict)  # Linear → its own block (K/V when KV groups are cut)
    constants: list[ConstantSlice] = field(default_factory=list)
    shapes: list[ShapeRewrite] = field(default_factory=list)
    values: dict[ir.Value, tuple[int, int | Fraction]] = field(
        default_factory=dict
    )  # value → (axis from end, per channel)
    entries: list[ShapeEntry] = field(default_factory=list)  # head counts in Reshape/Expand shapes
    kv_heads: int = 1  # grouped-query attention: channels (query heads) are kept in equal numbers per KV head
    readers: list[Linear] = field(default_factory=list)  # linears on the group's path that are not cut (K/V under GQA)
    depthwise: list[ir.Node] = field(default_factory=list)  # depthwise Convs passed: `group` = kept count
    windows: dict[ir.Value, Window] = field(default_factory=dict)  # values after a Concat or Split
    consumer_windows: dict[ir.Node, Window] = field(default_factory=dict)  # consumers reading one
    splits: list[SplitSizes] = field(default_factory=list)
    residual: bool = False  # producers joined at a residual Add (one residual stream's channels)
    reason: str = ""  # why the group is skipped ("" when it can be pruned)

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.producers)
