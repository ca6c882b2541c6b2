"""What a dependency group is: the tensors and slices that lose a channel together (see `groups`)."""

from dataclasses import dataclass, field

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
class PruneGroup:
    kind: str  # "ffn" (MatMul/Gemm producers) or "channels" (Conv producers)
    channels: int
    producers: list[Linear] = field(default_factory=list)
    consumers: list[Linear] = field(default_factory=list)
    repeat: int = 1  # consumer input rows per channel (H·W after a flatten, d for a head)
    block: int = 1  # producer output columns per channel (d for a head)
    constants: list[ConstantSlice] = field(default_factory=list)
    shapes: list[ShapeRewrite] = field(default_factory=list)
    values: dict[ir.Value, tuple[int, int]] = field(default_factory=dict)  # value → (axis from end, per channel)
    reason: str = ""  # why the group is skipped ("" when it can be pruned)

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.producers)
