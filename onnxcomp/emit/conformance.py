"""The conformance check: does a model use only what a target's runtime accepts?

Walks the graph in order against a `Target` (`onnxcomp.emit.targets`) and lists every violation;
the first one names the offending node. Checked:
- the default-domain opset within the target's range;
- each node's domain and op type (ANY = a standard ONNX operator, by `onnx.defs`);
- QuantizeLinear: of an activation, the quantized dtype is an accepted activation dtype, a per-tensor
  scale when the target asks; of a constant (a float weight the runtime quantizes at build time, as
  TensorRT does: "it quantizes high-precision weights using the IQuantizeLayer scale"), an accepted
  weight dtype with scalar or 1-D scales; zero point 0 when the target is symmetric-only; positive
  scales when required;
- DequantizeLinear: of a constant, the dtype is an accepted weight dtype, a blocked one has a
  blocked bit width and block size the target accepts, on the K axis of a MatMul's B when the target
  asks, an unblocked one a bit width the target reads per channel with scalar or 1-D scales; read
  as MatMul/Gemm's B next to a float activation (weight-only), a bit width the target runs
  weight-only, per-channel scales over N; of an activation, an accepted activation dtype; zero
  points and scales as above (on TensorRT, scales are strictly positive build-time constants);
- MatMulNBits / GatherBlockQuantized / MatMulInt4: bits and block size; zero points when the
  target is symmetric-only;
- on a target that reads quantized types through DequantizeLinear only (TensorRT): no other op
  reads an int8/uint8/int4/uint4 tensor (e.g. no Gather or Cast of an int8 table).
Nodes inside subgraphs (If/Loop/Scan bodies) are checked like the main graph's.
`compress(..., target=)` runs it on every output; `onnxcomp check MODEL --target T` on any file.
"""

from dataclasses import dataclass, field

import numpy as np
import onnx.defs
import onnx_ir as ir

from onnxcomp.custom_ops.reference import DOMAIN as CUSTOM_DOMAIN
from onnxcomp.custom_ops.reference import OP_TYPE as CUSTOM_OP
from onnxcomp.emit.targets import ANY, Target
from onnxcomp.errors import OnnxcompError
from onnxcomp.ir.graph import constant_array
from onnxcomp.ir.modelio import check_model, read_model_file

_BITS = {"int4": 4, "uint4": 4, "int8": 8, "uint8": 8, "int32": 32}
_QUANTIZED = ("int8", "uint8", "int4", "uint4")
# ops whose output has the dtype of their first input (data movement), for dtypes shape inference left unset
_SAME_DTYPE = frozenset(
    {"Gather", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Identity", "Flatten", "Expand"}
    | {"Tile", "Split", "GatherElements", "GatherND", "Pad"}
)


@dataclass
class Violation:
    node: str
    op: str
    reason: str

    def describe(self) -> str:
        return f"node {self.node!r} ({self.op}): {self.reason}" if self.node else self.reason


@dataclass
class Conformance:
    target: str
    nodes_checked: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self, limit: int = 20) -> dict:
        return {
            "target": self.target,
            "conforms": self.ok,
            "nodes_checked": self.nodes_checked,
            "first": self.violations[0].describe() if self.violations else None,
            "violations": [v.__dict__ for v in self.violations[:limit]],
            "violations_total": len(self.violations),
        }


def _dtype_name(value: ir.Value | None) -> str | None:
    if value is None:
        return None
    if value.dtype is not None:
        return value.dtype.name.lower()
    array = constant_array(value)
    return None if array is None else str(array.dtype)


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def _widths(bits: tuple[int, ...]) -> str:
    return " or ".join(f"{b}-bit" for b in bits) or "none"


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def _value_dtype(value: ir.Value | None, depth: int = 0) -> str | None:
    """A value's dtype: declared, a constant's, a QuantizeLinear's output, or through data movement."""
    name = _dtype_name(value)
    if name is not None or value is None or depth > 16:
        return name
    producer = value.producer()
    if producer is None:
        return None
    if producer.op_type == "QuantizeLinear" and producer.domain in ("", "ai.onnx"):
        attr = producer.attributes.get("output_dtype")
        if attr is not None and attr.as_int():
            return ir.DataType(attr.as_int()).name.lower()
        return _dtype_name(_input(producer, 2)) or "uint8"
    if producer.op_type in _SAME_DTYPE and producer.domain in ("", "ai.onnx") and producer.inputs:
        return _value_dtype(producer.inputs[0], depth + 1)
    return None


class _Checker:
    def __init__(self, target: Target):
        self.t = target

    def node(self, node: ir.Node) -> str | None:
        """The reason `node` breaks the target's rules, or None."""
        t = self.t
        q_or_dq = node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.domain in ("", "ai.onnx")
        if t.quantized_through_dq and not q_or_dq:  # (a QuantizeLinear reads its int8 zero point)
            for value in node.inputs:
                dtype = _value_dtype(value)
                if dtype == "uint8" and value.is_graph_input():
                    continue  # "UINT8 is only supported as network input or output tensor types"
                if dtype in _QUANTIZED:
                    return (
                        f"reads {dtype} tensor {value.name!r}: target {t.name!r} reads quantized types through "
                        "DequantizeLinear only"
                    )
        if node.domain not in t.domains:
            accepted = ", ".join(repr(d) for d in t.domains)
            return f"op domain {node.domain!r} is not accepted by target {t.name!r} (accepts {accepted})"
        if not t.accepts_op(node.domain, node.op_type):
            return f"{node.domain}::{node.op_type} is not among the ops target {t.name!r} accepts"
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            return f"{node.op_type} is not a standard ONNX operator"
        rule = {
            ("", "QuantizeLinear"): self.quantize,
            ("", "DequantizeLinear"): self.dequantize,
            ("com.microsoft", "MatMulNBits"): self.packed,
            ("com.microsoft", "GatherBlockQuantized"): self.packed,
            (CUSTOM_DOMAIN, CUSTOM_OP): self.packed,
        }.get((node.domain, node.op_type))
        return rule(node) if rule else None

    def _zero_point_and_scale(self, node: ir.Node) -> str | None:
        t = self.t
        scale = constant_array(_input(node, 1))
        if t.positive_scales and scale is None:
            return f"target {t.name!r} needs scales that are build-time constants"
        if t.positive_scales and not np.all(scale > 0):
            return f"target {t.name!r} needs strictly positive scales"
        if t.symmetric_only:
            zero_point = _input(node, 2)
            if zero_point is not None:
                array = constant_array(zero_point)
                if array is None or np.any(array.astype(np.int64) != 0):
                    return f"target {t.name!r} is symmetric only: the zero point must be 0"
        return None

    def _activation_dtype(self, dtype: str) -> str | None:
        t = self.t
        if dtype not in t.activation_dtypes:
            accepted = ", ".join(t.activation_dtypes)
            return f"activation dtype {dtype} not accepted by target {t.name!r} (accepts {accepted})"
        return None

    def quantize(self, node: ir.Node) -> str | None:
        t = self.t
        zero_point = _input(node, 2)
        attr = node.attributes.get("output_dtype")
        dtype = (
            ir.DataType(attr.as_int()).name.lower()
            if attr is not None and attr.as_int()
            else _dtype_name(zero_point) or "uint8"
        )
        scale = constant_array(_input(node, 1))
        if constant_array(node.inputs[0]) is not None:  # a float weight the runtime quantizes when it builds
            if dtype not in t.weight_dtypes:
                return f"weight dtype {dtype} not accepted by target {t.name!r} (accepts {', '.join(t.weight_dtypes)})"
            if scale is None or (scale.ndim > 1 and not _int_attr(node, "block_size", 0)):
                return f"target {t.name!r} reads weight scales as a constant scalar or 1-D (per channel)"
            return self._zero_point_and_scale(node)
        if dtype not in t.activation_dtypes:
            return (
                f"activation dtype {dtype} not accepted by target {t.name!r} (accepts {', '.join(t.activation_dtypes)})"
            )
        if t.per_tensor_activations and (scale is None or scale.size != 1):
            return f"target {t.name!r} quantizes activations per tensor (a constant scalar scale)"
        return self._zero_point_and_scale(node)

    def dequantize(self, node: ir.Node) -> str | None:
        t = self.t
        data = node.inputs[0]
        dtype = _dtype_name(data) or _dtype_name(_input(node, 2)) or "uint8"
        constant = constant_array(data) is not None
        if not constant:
            return self._activation_dtype(dtype) or self._zero_point_and_scale(node)
        if dtype not in t.weight_dtypes:
            return f"weight dtype {dtype} not accepted by target {t.name!r} (accepts {', '.join(t.weight_dtypes)})"
        block_size = _int_attr(node, "block_size", 0)
        if block_size:
            if _BITS.get(dtype) not in t.block_bits:
                bits = " or ".join(f"{b}-bit" for b in t.block_bits)
                return f"{dtype} blocks not accepted by target {t.name!r} (blocks are {bits} only)"
            if block_size not in t.block_sizes:
                sizes = ", ".join(map(str, t.block_sizes))
                return f"block size {block_size} not accepted by target {t.name!r} (accepts {sizes})"
            if t.block_on_k_axis:
                axis, rank = _int_attr(node, "axis", 1), len(data.shape) if data.shape is not None else 0
                readers = [(use.node.op_type, use.idx) for use in node.outputs[0].uses()]
                if rank != 2 or axis % 2 != 0 or any(r != ("MatMul", 1) for r in readers):
                    return f"target {t.name!r} blocks weights [K, N] on the K axis (axis 0) as MatMul's B"
            axis = _int_attr(node, "axis", 1)
            if t.whole_blocks and data.shape is not None and data.shape[axis] % block_size:
                return f"axis {axis} ({data.shape[axis]}) is not a multiple of block size {block_size} ({t.name!r})"
        else:
            problem = self._unblocked(node, dtype)
            if problem:
                return problem
        return self._weight_only(node, dtype, block_size) or self._zero_point_and_scale(node)

    def _unblocked(self, node: ir.Node, dtype: str) -> str | None:
        """An unblocked DequantizeLinear of a constant: a bit width the target reads per channel,
        scales a scalar or 1-D (per channel)."""
        t = self.t
        bits = _BITS.get(dtype)
        if bits in (4, 8) and bits not in t.channel_bits:
            return f"{dtype} weights need block scales on target {t.name!r} (per channel: {_widths(t.channel_bits)})"
        scale = constant_array(_input(node, 1))
        if scale is not None and scale.ndim > 1:
            return f"target {t.name!r} reads unblocked scales as a scalar or 1-D (per channel), not {scale.shape}"
        return None

    def _weight_only(self, node: ir.Node, dtype: str, block_size: int) -> str | None:
        """A weight read as MatMul/Gemm's B while the other input is float (not dequantized): a
        weight-only layer; its bit width must be one the target runs weight-only, and per-channel
        scales of a MatMul's B [K, N] run over N (axis 1)."""
        t = self.t
        for use in node.outputs[0].uses():
            reader = use.node
            if reader.op_type not in ("MatMul", "Gemm") or use.idx != 1:
                continue
            producer = reader.inputs[0].producer() if reader.inputs[0] is not None else None
            if producer is not None and producer.op_type == "DequantizeLinear":
                continue  # both inputs quantized: not weight-only
            if _BITS.get(dtype) not in t.weight_only_bits:
                return f"{dtype} weight-only layers (float activation) not accepted by target {t.name!r}"
            scale = constant_array(_input(node, 1))
            axis, data = _int_attr(node, "axis", 1), node.inputs[0]
            if (
                reader.op_type == "MatMul"
                and not block_size
                and scale is not None
                and scale.size > 1
                and data.shape is not None
                and len(data.shape) == 2
                and axis % 2 != 1
            ):
                return f"per-channel weight scales of MatMul's B [K, N] run over N (axis 1), not axis {axis}"
        return None

    def packed(self, node: ir.Node) -> str | None:
        t = self.t
        bits = _int_attr(node, "bits", 4)
        block = _int_attr(node, "block_size", 0) or _int_attr(node, "group_size", 0)
        if bits not in t.block_bits:
            return f"{bits}-bit blocks not accepted by target {t.name!r}"
        if block not in t.block_sizes:
            return (
                f"block size {block} not accepted by target {t.name!r} (accepts {', '.join(map(str, t.block_sizes))})"
            )
        if (
            t.symmetric_only and _input(node, 3) is not None
        ):  # zero_points (MatMulNBits, GatherBlockQuantized, MatMulInt4)
            return f"target {t.name!r} is symmetric only: no zero points"
        return None


def _opset_problem(model: ir.Model, target: Target) -> str | None:
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
    if opset < target.min_opset or (target.max_opset is not None and opset > target.max_opset):
        span = f"{target.min_opset}" + (f"-{target.max_opset}" if target.max_opset else "+")
        return f"opset {opset} outside target {target.name!r}'s opsets {span}"
    return None


def check_input(model: ir.Model, target: Target, what: str) -> None:
    """Before any work: refuse an input whose opset, or one of whose ops, the target does not run
    (no pass removes an op of another domain, so the output would fail the check)."""
    problem = _opset_problem(model, target)
    if problem:
        opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 0))
        hint = target.min_opset if opset < target.min_opset else target.max_opset
        raise OnnxcompError(f"{what}: {problem} (pass --opset {hint})")
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if not target.accepts_op(node.domain, node.op_type):
            raise OnnxcompError(
                f"{what}: node {node.name!r} ({node.domain}::{node.op_type}) is not an op target {target.name!r} runs"
            )


def check_conformance(model: ir.Model, target: Target) -> Conformance:
    """Every violation of `target`'s rules in `model` (the main graph and its subgraphs, in order)."""
    result = Conformance(target.name)
    problem = _opset_problem(model, target)
    if problem:
        result.violations.append(Violation("", "", problem))
    checker = _Checker(target)
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        result.nodes_checked += 1
        reason = checker.node(node)
        if reason:
            result.violations.append(Violation(node.name or "", f"{node.domain or 'ai.onnx'}::{node.op_type}", reason))
    return result


def require_conformance(model: ir.Model, target: Target, what: str) -> Conformance:
    """`check_conformance`, raising one error line naming the first offending node."""
    result = check_conformance(model, target)
    if not result.ok:
        more = f" (+{len(result.violations) - 1} more)" if len(result.violations) > 1 else ""
        raise OnnxcompError(
            f"{what} does not conform to target {target.name!r}: {result.violations[0].describe()}{more}"
        )
    return result


def check_file(path, target: Target) -> Conformance:
    """`onnxcomp check`: the ONNX checker (full check) and the target's rules on a model file."""
    proto, _ = read_model_file(path)
    model = ir.from_proto(proto)
    result = check_conformance(model, target)
    try:
        check_model(model, str(path))
    except OnnxcompError as exc:
        result.violations.insert(0, Violation("", "", str(exc)))
    return result


def target_summary(target: Target) -> dict:
    """What a target accepts, JSON-able (for `onnxcomp targets`)."""
    return {
        "description": target.description,
        "domains": {
            d or "ai.onnx": "any standard op" if ops is ANY else sorted(ops) for d, ops in target.domains.items()
        },
        "weight_only_formats": list(target.weight_only_formats),
        "activation_dtypes": list(target.activation_dtypes),
        "weight_dtypes": list(target.weight_dtypes),
        "symmetric_only": target.symmetric_only,
        "block_bits": list(target.block_bits),
        "channel_bits": list(target.channel_bits),
        "weight_only_bits": list(target.weight_only_bits),
        "block_sizes": list(target.block_sizes),
        "fp16": target.fp16,
        "opsets": [target.min_opset, target.max_opset],
        "verified": target.verified,
    }
