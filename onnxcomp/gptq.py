"""GPTQ for blockwise weight-only quantization (pure numpy), and staged Hessian collection in ONNX Runtime.

GPTQ (Frantar et al., 2022) quantizes the input rows of W[K, N] one at a time and spreads each
row's rounding error over the rows not yet quantized, weighted by the inverse Hessian of the
layer's squared output error, H = 2 XᵀX / rows (X: the calibration inputs [rows, K]). Here:

- dampening: H + damp · mean(diag H) · I; inputs that are always 0 (diag 0) get weight rows 0;
- groups: every block of `group` rows along K gets one scale (and zero point), stored in RTN's
  layout and formats (`onnxcomp.blockwise`). With `static_groups` they are fixed from the original
  weight before any update (RTN's rule); otherwise ("lazy", the paper's choice) each block's are
  taken from the partly updated weight when GPTQ reaches the block's first row. `act_order`
  visits the rows by decreasing diag(H) and always uses static groups (each row keeps its own
  block's scale, so no g_idx is needed). `clip_search` picks each block's range ratio from
  `blockwise.CLIP_GRID` by the block's output error δᵀ·H_block·δ (H's diagonal block);
- blocked lazy updates: rows are processed in blocks of `block` and the remaining rows are
  updated once per block with one matrix product;
- the output columns are independent, so they are processed in chunks of `CHUNK` columns: a large
  N (an LM head) needs memory for one chunk at a time, not for several float64 copies of W.

`hessian_error` gives tr(ΔWᵀ H ΔW) / tr(Wᵀ H W), the relative output error on the calibration
inputs that GPTQ minimizes (RTN's can be computed the same way for comparison).

`StagedHessians` runs a model in ONNX Runtime stage by stage (see its docstring): the inputs of
the linears are grouped into stages in topological order, and the Hessians of each stage come
from running only the subgraph between two cuts, starting from the values cached at the previous
cut, with the weights quantized so far replaced by their dequantized values.
"""

from __future__ import annotations

import numpy as np

from .blockwise import CLIP_GRID, BlockQuantized, _block_errors, _blocks, _codes, _scales, check_settings
from .errors import OnnxcompError

CHUNK = 4096  # output columns per GPTQ chunk


def _group_params(blocks: np.ndarray, bits: int, symmetric: bool, grams: np.ndarray | None, clip_search: bool,
                  signed_scales: bool):
    """(scale, zero) [N, n_blocks] for blocks [N, n_blocks, g]; scales rounded to float32 as stored.
    With `clip_search`, each block's ratio minimizes δᵀ·G·δ (grams [n_blocks, g, g]) or Σδ²."""
    best_err = best_scale = best_zero = None
    for ratio in (CLIP_GRID if clip_search else (1.0,)):
        scale, zero = _scales(blocks, bits, symmetric, ratio, signed_scales)
        scale = scale.astype(np.float32).astype(np.float64)
        if not clip_search:
            return scale, zero
        err = _block_errors((_codes(blocks, scale, zero, bits) - zero[..., None]) * scale[..., None] - blocks, grams)
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
        else:
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale = np.where(better, scale, best_scale)
            best_zero = np.where(better, zero, best_zero)
    return best_scale, best_zero


def _diagonal_blocks(hessian: np.ndarray, group: int, n_blocks: int) -> np.ndarray:
    """H's diagonal blocks [n_blocks, group, group] (a last partial block padded with zeros)."""
    k = hessian.shape[0]
    out = np.zeros((n_blocks, group, group))
    for b in range(n_blocks):
        g0, g1 = b * group, min((b + 1) * group, k)
        out[b, : g1 - g0, : g1 - g0] = hessian[g0:g1, g0:g1]
    return out


def gptq_quantize(weight: np.ndarray, hessian: np.ndarray, bits: int = 4, group: int = 128, symmetric: bool = True,
                  damp: float = 0.01, act_order: bool = False, block: int = 128, static_groups: bool = True,
                  clip_search: bool = False, signed_scales: bool = False) -> BlockQuantized:
    """GPTQ of W[K, N] given H[K, K] = 2XᵀX/rows of its inputs; the layout is RTN's (BlockQuantized)."""
    check_settings(bits, group)
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise OnnxcompError(f"GPTQ needs a 2-D weight, got shape {weight.shape}")
    k, n = weight.shape
    hessian = np.array(hessian, dtype=np.float64)
    if hessian.shape != (k, k):
        raise OnnxcompError(f"GPTQ: Hessian shape {hessian.shape} does not match the weight's K = {k}")
    if not 0 <= damp < 1:
        raise OnnxcompError(f"GPTQ: damp must be in [0, 1), not {damp!r}")
    static = static_groups or act_order
    n_blocks = -(-k // group)
    grams = _diagonal_blocks(hessian, group, n_blocks) if clip_search else None  # of the undamped H
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(k)
    hessian = hessian[np.ix_(order, order)]
    hessian[np.diag_indices(k)] += damp * np.mean(np.diag(hessian))
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(hessian)).T  # upper Cholesky factor of H⁻¹
    except np.linalg.LinAlgError:
        raise OnnxcompError("GPTQ: the damped Hessian is not positive definite; raise damp") from None
    del hessian
    codes = np.zeros((n, n_blocks * group), dtype=np.uint8)  # padding codes: 0, as RTN stores them
    scales = np.empty((n, n_blocks), dtype=np.float32)
    zeros = np.empty((n, n_blocks), dtype=np.uint8)
    for c0 in range(0, n, CHUNK):
        c1 = min(c0 + CHUNK, n)
        w = np.asarray(weight[:, c0:c1], dtype=np.float64).T.copy()  # [n_chunk, K]: one column per input channel
        if static:  # from the original weight (dead rows included), RTN's rule
            scale, zero = _group_params(_blocks(w.T, group), bits, symmetric, grams, clip_search, signed_scales)
        w[:, dead] = 0.0
        if not static:
            scale, zero = np.ones((c1 - c0, n_blocks)), np.zeros((c1 - c0, n_blocks))
        w = w[:, order]
        chunk_codes = _gptq_columns(w, hinv, order, scale, zero, bits, group, block, symmetric, static, grams, clip_search,
                                    signed_scales)
        codes[c0:c1, order] = chunk_codes
        scales[c0:c1], zeros[c0:c1] = scale, zero
    return BlockQuantized(codes.reshape(n, n_blocks, group), scales, zeros, k, bits, group, symmetric)


def _gptq_columns(w, hinv, order, scale, zero, bits, group, block, symmetric, static, grams, clip_search,
                  signed_scales) -> np.ndarray:
    """GPTQ's loop over the visited input channels of w [n, K] (already permuted by `order`); fills
    `scale`/`zero` [n, n_blocks] in place when groups are lazy; returns uint8 codes in visiting order."""
    n, k = w.shape
    levels = 2**bits - 1
    group_of = order // group
    codes = np.empty((n, k), dtype=np.uint8)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            g = group_of[i1 + i]
            if not static and (i1 + i) % group == 0:  # lazy groups (no act_order): this block's first row
                end = min(i1 + i + group, k)
                current = np.concatenate([w1[:, i:min(i2 - i1, end - i1)], w[:, i2:max(end, i2)]], axis=1)
                s, z = _group_params(current[:, None, :], bits, symmetric,
                                     None if grams is None else grams[g : g + 1, : end - i1 - i, : end - i1 - i], clip_search,
                                     signed_scales)
                scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
            s, z = scale[:, g], zero[:, g]
            c = np.clip(np.round(col / s) + z, 0, levels)
            codes[:, i1 + i] = c
            e = (col - (c - z) * s) / h1[i, i]
            w1[:, i:] -= np.outer(e, h1[i, i:])
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return codes


def hessian_error(weight: np.ndarray, dequantized: np.ndarray, hessian: np.ndarray) -> float:
    """tr(ΔWᵀ H ΔW) / tr(Wᵀ H W): the relative squared output error on the calibration inputs."""
    num = den = 0.0
    for c0 in range(0, weight.shape[1], CHUNK):
        w = np.asarray(weight[:, c0 : c0 + CHUNK], np.float64)
        d = np.asarray(dequantized[:, c0 : c0 + CHUNK], np.float64) - w
        den += float(((hessian @ w) * w).sum())
        num += float(((hessian @ d) * d).sum())
    return num / max(den, 1e-30)


class HessianAccumulator:
    """Streams H = 2 XᵀX / rows over batches of X [..., K] (float64, bounded: K × K per input)."""

    def __init__(self, k: int):
        self.sum = np.zeros((k, k), dtype=np.float64)
        self.rows = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.sum.shape[0])
        self.sum += x.T @ x
        self.rows += len(x)

    @property
    def hessian(self) -> np.ndarray:
        return 2.0 * self.sum / max(self.rows, 1)


def collect_hessians(model, tensor_names: list[str], reader) -> dict[str, np.ndarray]:
    """H = 2XᵀX/rows of each named float tensor (last axis = K), all in one ONNX Runtime run of the
    model as it is (no stages; the reference that `StagedHessians` without replacements equals)."""
    import onnx_ir as ir

    from .calibration.runner import _bytes_with_outputs, _session

    names = sorted(set(tensor_names))
    if not names:
        return {}
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    session = _session(_bytes_with_outputs(proto, names))
    del proto
    acc: dict[str, HessianAccumulator] = {}
    count = 0
    for feed in reader:
        count += 1
        for name, value in zip(names, session.run(names, feed)):
            value = np.asarray(value)
            if name not in acc:
                acc[name] = HessianAccumulator(value.shape[-1])
            acc[name].add(value)
    if not count:
        raise OnnxcompError("GPTQ: calibration data produced no samples")
    return {name: a.hessian for name, a in acc.items()}


def _outer_inputs(node) -> list:
    """The node's inputs, and the outer-scope values its subgraphs (If/Loop/Scan bodies) read."""
    import onnx_ir as ir

    values = list(node.inputs)
    for attr in node.attributes.values():
        graphs = [attr.value] if attr.type == ir.AttributeType.GRAPH else list(attr.value) if attr.type == ir.AttributeType.GRAPHS else []
        for sub in graphs:
            own = {id(v) for v in sub.inputs} | {id(v) for v in sub.initializers.values()}
            for inner in sub:
                own.update(id(o) for o in inner.outputs)
            for inner in sub:
                values += [v for v in _outer_inputs(inner) if v is not None and id(v) not in own]
    return values


class StagedHessians:
    """H = 2XᵀX/rows of chosen tensors, stage by stage through the model in ONNX Runtime.

    The tensors are grouped by their producer node (a graph input counts as produced before every
    node) and the stages ordered by that node's position in the (topologically sorted) graph: a
    stage's cut lies just after its producer. The values crossing a cut (the "frontier": produced
    before it and read at or after it, e.g. the residual stream, the mask and rotary tensors) are
    kept per calibration feed, and each stage runs only the nodes between the previous cut and its
    own that its frontier needs, in a fresh session holding only those nodes' initializers. Calls
    to `replace` (a linear's weight → its dequantized value, read by that node only) before the
    next stage make later stages see the quantized earlier layers (sequential GPTQ); without them
    the Hessians equal one run of the unmodified model (`collect_hessians`).

    Memory: the graph's nodes and weights are not copied as a whole; what is held is one stage's
    subgraph, the frontier of every feed, and the Hessians of one stage. The calibration reader is
    iterated once.
    """

    def __init__(self, model, tensor_names: list[str], reader):
        import onnx_ir as ir

        self.model = model
        graph = model.graph
        self.nodes = list(graph)
        position = {id(node): i for i, node in enumerate(self.nodes)}
        inputs = {id(v) for v in graph.inputs}
        self._value: dict[str, object] = {v.name: v for v in graph.inputs}
        self._last_use: dict[str, int] = {}
        self._produced: dict[str, int] = {v.name: -1 for v in graph.inputs}
        for i, node in enumerate(self.nodes):
            for v in _outer_inputs(node):
                if v is not None and (v.producer() is not None or id(v) in inputs):
                    self._last_use[v.name] = i
            for v in node.outputs:
                self._value[v.name] = v
                self._produced[v.name] = i
        by_cut: dict[int, list[str]] = {}
        for name in sorted(set(tensor_names)):
            if name not in self._produced:
                raise OnnxcompError(f"GPTQ: tensor {name!r} is neither a graph input nor a node output")
            by_cut.setdefault(self._produced[name] + 1, []).append(name)
        self.stages: list[list[str]] = [by_cut[c] for c in sorted(by_cut)]
        self._cuts = sorted(by_cut)
        self._next = 0
        self._cut = 0
        self._reader = reader
        self._frontiers: list[dict[str, np.ndarray]] | None = None
        self._replaced: dict[int, dict[int, np.ndarray]] = {}  # id(node) → {input index: array}
        self._position = position
        self._ir = ir
        self.frontier_sizes: list[int] = []  # names kept at each cut, for the report and tests
        self.frontier_bytes = 0  # the largest frontier held, all feeds together
        self.nodes_run = 0  # nodes of all stage subgraphs together (each node runs in at most one stage)

    def replace(self, node, index: int, array: np.ndarray) -> None:
        """From the next stage on, `node` reads `array` instead of its constant input `index`."""
        self._replaced.setdefault(id(node), {})[index] = np.ascontiguousarray(array)

    def _frontier(self, cut: int) -> list[str]:
        return sorted(name for name, last in self._last_use.items() if self._produced[name] < cut <= last)

    def next_stage(self) -> tuple[list[str], dict[str, np.ndarray]]:
        """Runs the next stage over every feed; returns its tensor names and their Hessians."""
        from .calibration.runner import _session

        if self._next >= len(self.stages):
            raise OnnxcompError("GPTQ: no stage left")
        names, cut = self.stages[self._next], self._cuts[self._next]
        self._next += 1
        keep = self._frontier(cut)
        self.frontier_sizes.append(len(keep))
        wanted = sorted(set(keep) | set(names))
        have = set(self._frontier(self._cut)) | ({v.name for v in self.model.graph.inputs} if self._frontiers is None else set())
        outputs = [n for n in wanted if n not in have]
        proto, feeds_used = self._subgraph(self._cut, cut, outputs) if outputs else (None, [])
        session = _session(proto.SerializeToString()) if proto is not None else None
        del proto
        acc: dict[str, HessianAccumulator] = {}
        source = self._frontiers if self._frontiers is not None else self._reader
        new_frontiers = []
        count = 0
        for frontier in source:
            count += 1
            values = dict(zip(outputs, session.run(outputs, {n: frontier[n] for n in feeds_used}))) if session else {}
            for n in wanted:
                if n not in values:
                    values[n] = frontier[n]
            for n in names:
                x = np.asarray(values[n])
                if x.dtype.kind != "f":
                    raise OnnxcompError(f"GPTQ: tensor {n!r} is {x.dtype}, not float")
                acc.setdefault(n, HessianAccumulator(x.shape[-1])).add(x)
            new_frontiers.append({n: values[n] for n in keep})
        if not count:
            raise OnnxcompError("GPTQ: calibration data produced no samples")
        del session
        self._frontiers, self._cut = new_frontiers, cut
        self.frontier_bytes = max(self.frontier_bytes, sum(a.nbytes for f in new_frontiers for a in f.values()))
        return names, {n: a.hessian for n, a in acc.items()}

    def _subgraph(self, start: int, stop: int, outputs: list[str]):
        """ModelProto of the nodes in [start, stop) that `outputs` need; its inputs are frontier values."""
        from onnx import helper, numpy_helper

        ir = self._ir
        needed = set(outputs)
        chosen = []
        for i in range(stop - 1, start - 1, -1):
            node = self.nodes[i]
            if any(o.name in needed for o in node.outputs):
                chosen.append(node)
                needed.update(v.name for v in _outer_inputs(node) if v is not None)
        chosen.reverse()
        self.nodes_run += len(chosen)
        node_protos, initializers, graph_inputs, seen = [], [], [], set()
        for node in chosen:
            proto = ir.serde.serialize_node(node)
            for index, array in sorted(self._replaced.get(id(node), {}).items()):
                name = f"{node.inputs[index].name}__dequantized_{self._position[id(node)]}"
                proto.input[index] = name
                initializers.append(numpy_helper.from_array(array, name))
            replaced = self._replaced.get(id(node), {})
            direct = [v for i, v in enumerate(node.inputs) if i not in replaced]
            for v in direct + _outer_inputs(node)[len(node.inputs):]:
                if v is None or v.name in seen or v.name in self._produced or v.const_value is None:
                    continue
                seen.add(v.name)
                tensor = ir.serde.serialize_tensor(v.const_value)
                tensor.name = v.name
                initializers.append(tensor)
            node_protos.append(proto)
        produced_here = {o.name for node in chosen for o in node.outputs}
        feeds = sorted(n for n in needed if n not in produced_here and n in self._produced)
        for n in feeds:
            graph_inputs.append(helper.make_tensor_value_info(n, self._value[n].dtype.value, None))
        graph_outputs = [helper.make_tensor_value_info(n, self._value[n].dtype.value, None) for n in outputs]
        graph = helper.make_graph(node_protos, "gptq_stage", graph_inputs, graph_outputs, initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in self.model.opset_imports.items()],
                                  ir_version=self.model.ir_version)
        for f in self.model.functions.values():
            model.functions.append(ir.serde.serialize_function(f))
        return model, feeds
