"""One view of a layer with a constant weight: MatMul, Gemm or Conv.

"Which weight axis is K, which is N, is there a bias, where does the layer's output go" is
answered here once, for quantization (QDQ axes, weight-only [K, N] blocks), scale folding
(SmoothQuant, AWQ) and, next, pruning. A `Linear` records the node's attributes (Gemm alpha,
beta, transA) and each user decides what it accepts: `plain` says the layer computes exactly
X·W (+ bias).

Axes: MatMul W[..., K, N] (in −2, out −1); Gemm B[K, N], or [N, K] with transB; Conv
W[O, I/groups, kh, kw] (in 1, out 0). `bias` is a constant [N] added to the output: Gemm's C,
Conv's B, or the only reader of a MatMul output when it is an `Add` of a constant [N]; `output`
is the layer's output after that bias.
"""

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxcomp.ir.graph import INPUT_INITIALIZER, NodeFilter, constant_array

LINEAR_OPS = ("MatMul", "Gemm", "Conv")


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _bias_after(output: ir.Value, n: int) -> tuple[ir.Value | None, ir.Value]:
    """A constant [N] bias Add that is the only reader of a MatMul output: (bias, Add output)."""
    uses = output.uses()
    if len(uses) != 1 or output.is_graph_output():
        return None, output
    add = uses[0].node
    if add.op_type != "Add" or add.domain != "":
        return None, output
    other = add.inputs[1 - uses[0].idx]
    array = constant_array(other)
    if array is None or array.shape != (n,):
        return None, output
    return other, add.outputs[0]


@dataclass(eq=False)
class Linear:
    node: ir.Node
    weight: ir.Value
    in_axis: int  # the weight axis indexing input channels (K), non-negative
    out_axis: int  # the weight axis indexing output channels (N), non-negative
    bias: ir.Value | None = None
    output: ir.Value | None = None
    alpha: float = 1.0
    beta: float = 1.0
    trans_a: bool = False
    _cache: tuple = field(default=(None, None), repr=False)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def array(self) -> np.ndarray:
        """The weight as stored, read once per stored tensor (a rewrite that replaces it is seen)."""
        tensor = self.weight.const_value
        if self._cache[0] is not tensor or tensor is None:
            self._cache = (tensor, constant_array(self.weight))
        return self._cache[1]

    def release(self) -> None:
        """Drop the array read from the stored weight (a copy); the next use reads it again."""
        self._cache = (None, None)

    @property
    def is_matrix(self) -> bool:
        """A 2-D float weight: what weight-only quantization and scale folding handle."""
        return self.array.ndim == 2 and self.array.dtype.kind == "f"

    @property
    def plain(self) -> bool:
        """Computes exactly X·W (+ bias): no Gemm alpha/beta ≠ 1 and no transA."""
        return not self.trans_a and self.alpha == 1.0 and self.beta == 1.0

    @property
    def transposed(self) -> bool:
        """The stored matrix is [N, K] (Gemm transB)."""
        return self.node.op_type == "Gemm" and self.in_axis == 1

    @property
    def k(self) -> int:
        return self.array.shape[self.in_axis]

    @property
    def n(self) -> int:
        return self.array.shape[self.out_axis]

    def weight_kn(self) -> np.ndarray:
        """A 2-D weight as [K, N] (a view: input channels first)."""
        return self.array.T if self.transposed else self.array

    def from_kn(self, kn: np.ndarray) -> np.ndarray:
        """A [K, N] matrix in this layer's own layout and dtype."""
        return (kn.T if self.transposed else kn).astype(self.array.dtype)

    def skip_reason(self) -> str:
        """Why weight-only quantization leaves this layer alone ("" when it can quantize it)."""
        array = self.array
        if not self.is_matrix:
            return f"weight is not a 2-D float matrix (shape {list(array.shape)}, {array.dtype})"
        if not self.plain:
            return "Gemm with transA or alpha/beta ≠ 1"
        return ""


def linear_of(node: ir.Node) -> Linear | None:
    """The node as a `Linear` when it is a MatMul/Gemm/Conv whose weight (input 1) is a constant."""
    if node.domain != "" or node.op_type not in LINEAR_OPS or len(node.inputs) < 2:
        return None
    weight = node.inputs[1]
    array = constant_array(weight)
    if array is None:
        return None
    linear = Linear(node, weight, 0, 1, output=node.outputs[0])
    linear._cache = (weight.const_value, array)
    if node.op_type == "Conv":
        linear.in_axis, linear.out_axis = 1, 0
        linear.bias = _constant_vector(node.inputs[2] if len(node.inputs) > 2 else None, array.shape[0])
    elif node.op_type == "Gemm":
        if _attr(node, "transB", 0):
            linear.in_axis, linear.out_axis = 1, 0
        linear.alpha, linear.beta = float(_attr(node, "alpha", 1.0)), float(_attr(node, "beta", 1.0))
        linear.trans_a = bool(_attr(node, "transA", 0))
        linear.bias = _constant_vector(node.inputs[2] if len(node.inputs) > 2 else None, linear.n)
    else:
        linear.in_axis, linear.out_axis = max(array.ndim - 2, 0), array.ndim - 1
        if array.ndim == 2:
            linear.bias, linear.output = _bias_after(node.outputs[0], array.shape[1])
    return linear


def release_weight(linear: Linear) -> None:
    """Forget the layer's weight array; a weight in external data is unmapped (it maps again when
    read), so a pass over a large model holds one layer's pages at a time, not the whole file."""
    linear._cache = (None, None)
    tensor = linear.weight.const_value
    if isinstance(tensor, ir.ExternalTensor):
        try:
            tensor.release()
        except BufferError:  # another view of the map is alive: keep it
            pass


def weight_only_linears(model: ir.Model, exclude: list[str] = ()) -> tuple[list[Linear], list[dict]]:
    """The MatMul/Gemm linears weight-only quantization can rewrite, in graph order, and
    [{node, reason}] for the others (excluded by name/op glob, no constant weight, `skip_reason`)."""
    node_filter = NodeFilter(list(exclude))
    node_filter.check_all_match(model)
    linears, skipped = [], []
    for node in list(model.graph):
        if node.domain != "" or node.op_type not in ("MatMul", "Gemm"):
            continue
        if node_filter.excludes(node):
            skipped.append({"node": node.name, "reason": "excluded"})
            continue
        linear = linear_of(node)
        why = _not_constant(node.inputs[1]) if linear is None else linear.skip_reason()
        if why:
            skipped.append({"node": node.name, "reason": why})
            continue
        linears.append(linear)
    return linears, skipped


def _not_constant(weight: ir.Value | None) -> str:
    overridable = weight is not None and weight.is_graph_input() and weight.const_value is not None
    return INPUT_INITIALIZER if overridable else "weight is not a constant"


def _constant_vector(value: ir.Value | None, n: int) -> ir.Value | None:
    """`value` when it is a constant of shape [n] (a per-channel bias), else None."""
    array = constant_array(value)
    return value if array is not None and array.shape == (n,) else None


def matrix_linear(node: ir.Node) -> Linear | None:
    """A MatMul/Gemm with a constant 2-D float weight and no transA (what scale folding can move
    scales through), else None."""
    linear = linear_of(node)
    if linear is None or node.op_type == "Conv" or linear.trans_a or not linear.is_matrix:
        return None
    return linear


def scale_along(value: ir.Value, factors: np.ndarray, axis: int) -> None:
    """Multiply a constant by `factors` along `axis` (negative axes count from the end), in its dtype."""
    array = constant_array(value)
    shape = [1] * array.ndim
    shape[axis] = -1
    value.const_value = ir.tensor(
        np.ascontiguousarray((array * factors.reshape(shape)).astype(array.dtype)), name=value.name
    )
