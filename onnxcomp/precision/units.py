"""Sensitivity units: the linears that must share one precision decision, and what each scheme costs.

A unit is every quantizable linear (a MatMul/Gemm with a constant 2-D weight, as the weight-only
passes see them) that reads the same input tensor — Q/K/V, gate/up — so a fused group is decided
together and its input's Gram serves it; units that share a weight are merged. A gathered table
equal to a unit's weight transposed (a tied embedding) belongs to that unit: the weight-only
emitter stores the table once with the LM head's codes, which needs symmetric blocks, so a unit
with a tied table is offered symmetric schemes only.
"""

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcomp.algorithms.blockwise import (
    GROUP_SIZES,
    BlockQuantized,
    dequantize_blockwise,
    packed_codes,
    packed_zero_points,
    quantize_blockwise,
)
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.linears import Linear, weight_only_linears
from onnxcomp.ir.patterns import row_gather_tables, tied_table
from onnxcomp.precision.plan import Scheme


@dataclass(eq=False)
class Unit:
    name: str
    linears: list[Linear]
    tied_tables: list[str] = field(default_factory=list)  # names of gathered tables equal to a weightᵀ

    @property
    def inputs(self) -> list[str]:
        return sorted({linear.node.inputs[0].name for linear in self.linears})

    def weights(self) -> list[Linear]:
        """One linear per distinct stored weight."""
        seen: dict[ir.Value, Linear] = {}
        for linear in self.linears:
            seen.setdefault(linear.weight, linear)
        return list(seen.values())

    @property
    def float_bytes(self) -> int:
        return sum(linear.array.nbytes for linear in self.weights())

    @property
    def parameters(self) -> int:
        return sum(linear.array.size for linear in self.weights())


def parse_scheme(text: str) -> Scheme:
    """'int4-g128-sym', 'int8-g32-asym', 'int8-channel', 'fp16', 'keep' → Scheme (a channel scheme's
    group, K, is the layer's: 0 here)."""
    if text in ("keep", "fp16"):
        return Scheme(text)
    if text == "int8-channel":
        return Scheme("channel", 8, 0, True)
    parts = text.split("-")
    try:
        bits, group, sym = parts
        assert bits in ("int4", "int8") and group[:1] == "g" and sym in ("sym", "asym")
        assert int(group[1:]) in GROUP_SIZES
        return Scheme("blockwise", int(bits[3:]), int(group[1:]), sym == "sym")
    except (ValueError, AssertionError):
        raise OnnxcompError(
            f"unknown scheme {text!r} (write int4|int8-g32|g64|g128-sym|asym, e.g. int4-g128-sym, "
            "or int8-channel, fp16, keep)"
        ) from None


def scheme_name(scheme: Scheme) -> str:
    if scheme.kind in ("keep", "fp16"):
        return scheme.kind
    if scheme.kind == "channel":
        return f"int{scheme.bits}-channel"
    return f"int{scheme.bits}-g{scheme.group}-{'sym' if scheme.symmetric else 'asym'}"


def find_units(model: ir.Model, exclude: list[str] = ()) -> tuple[list[Unit], list[dict]]:
    """The units of the model in graph order, and [{node, reason}] for linears left out."""
    linears, skipped = weight_only_linears(model, exclude)
    by_input: dict[str, list[Linear]] = {}
    for linear in linears:
        by_input.setdefault(linear.node.inputs[0].name, []).append(linear)
    groups = list(by_input.values())
    merged = True
    while merged:  # units sharing a stored weight become one
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if {lin.weight for lin in groups[i]} & {lin.weight for lin in groups[j]}:
                    groups[i] += groups.pop(j)
                    merged = True
                    break
            if merged:
                break
    tables = row_gather_tables(model)
    units = []
    for linears in groups:
        unit = Unit(linears[0].name or linears[0].node.inputs[0].name, linears)
        for linear in unit.weights():
            table = tied_table(linear.weight_kn(), tables)
            if table:
                unit.tied_tables.append(table)
        units.append(unit)
    return units, skipped


@dataclass
class Quantized:
    """A unit under one scheme: stored bytes and, per distinct weight, the dequantized [K, N] weight."""

    bytes: int
    dequantized: dict[ir.Value, np.ndarray]


def quantize_unit(unit: Unit, scheme: Scheme, signed_scales: bool = True) -> Quantized:
    """Round-to-nearest codes of every weight of the unit (the emitter's byte layout)."""
    if scheme.kind == "keep":
        return Quantized(unit.float_bytes, {linear.weight: linear.weight_kn() for linear in unit.weights()})
    if scheme.kind == "fp16":  # stored as float16 (`store_fp16`): half the bytes, float16 rounding
        return Quantized(
            unit.float_bytes // 2,
            {linear.weight: linear.weight_kn().astype(np.float16).astype(np.float32) for linear in unit.weights()},
        )
    total, backs = 0, {}
    for linear in unit.weights():
        q: BlockQuantized = quantize_blockwise(
            linear.weight_kn(), scheme.bits, scheme.group, scheme.symmetric, signed_scales=signed_scales
        )
        total += packed_codes(q).nbytes + q.scales.nbytes
        if not scheme.symmetric:
            total += packed_zero_points(q).nbytes
        backs[linear.weight] = dequantize_blockwise(q)
    return Quantized(total, backs)
