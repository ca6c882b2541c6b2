"""GPTQ for blockwise weight-only quantization (pure numpy), and Hessian collection in ONNX Runtime.

GPTQ (Frantar et al., 2022) quantizes the input rows of W[K, N] one at a time and spreads each
row's rounding error over the rows not yet quantized, weighted by the inverse Hessian of the
layer's squared output error, H = 2 XᵀX / rows (X: the calibration inputs [rows, K]). Here:

- dampening: H + damp · mean(diag H) · I; inputs that are always 0 (diag 0) get weight rows 0;
- groups: the per-block scales and zero points are fixed from the original weight before the
  error updates ("static groups"), with the same rule as RTN (`onnxcomp.blockwise`), so the
  result is stored in exactly the same layout and formats as RTN; with `act_order` the rows are
  visited by decreasing diag(H) while each row keeps its own block's scale (no g_idx needed);
- blocked lazy updates: rows are processed in blocks of `block` and the remaining rows are
  updated once per block with one matrix product.

`hessian_error` gives tr(ΔWᵀ H ΔW) / tr(Wᵀ H W), the relative output error on the calibration
inputs that GPTQ minimizes (RTN's can be computed the same way for comparison).
"""

from __future__ import annotations

import numpy as np

from .blockwise import BlockQuantized, _blocks, _scales, check_settings
from .errors import OnnxcompError


def gptq_quantize(weight: np.ndarray, hessian: np.ndarray, bits: int = 4, group: int = 128, symmetric: bool = True,
                  damp: float = 0.01, act_order: bool = False, block: int = 128) -> BlockQuantized:
    """GPTQ of W[K, N] given H[K, K] = 2XᵀX/rows of its inputs; the layout is RTN's (BlockQuantized)."""
    check_settings(bits, group)
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 2:
        raise OnnxcompError(f"GPTQ needs a 2-D weight, got shape {weight.shape}")
    k, n = weight.shape
    hessian = np.array(hessian, dtype=np.float64)
    if hessian.shape != (k, k):
        raise OnnxcompError(f"GPTQ: Hessian shape {hessian.shape} does not match the weight's K = {k}")
    if not 0 <= damp < 1:
        raise OnnxcompError(f"GPTQ: damp must be in [0, 1), not {damp!r}")
    levels = 2**bits - 1

    # static group scales from the original weight, RTN's rule; stored in float32 as dequantization will use them
    scale, zero = _scales(_blocks(weight, group), bits, symmetric, 1.0)
    scale = scale.astype(np.float32).astype(np.float64)  # [N, n_blocks]
    w = weight.T.copy()  # [N, K]: GPTQ's orientation, one column per input channel
    dead = np.diag(hessian) == 0
    hessian[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(k)
    w = w[:, order]
    hessian = hessian[np.ix_(order, order)]
    hessian[np.diag_indices(k)] += damp * np.mean(np.diag(hessian))
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(hessian)).T  # upper Cholesky factor of H⁻¹
    except np.linalg.LinAlgError:
        raise OnnxcompError("GPTQ: the damped Hessian is not positive definite; raise damp") from None
    group_of = order // group  # block of each visited column
    codes = np.zeros((n, k), dtype=np.float64)  # in visiting order
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].copy()
        err1 = np.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            g = group_of[i1 + i]
            s, z = scale[:, g], zero[:, g]
            c = np.clip(np.round(col / s) + z, 0, levels)
            codes[:, i1 + i] = c
            e = (col - (c - z) * s) / h1[i, i]
            w1[:, i:] -= np.outer(e, h1[i, i:])
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    unordered = np.empty_like(codes)
    unordered[:, order] = codes
    n_blocks = scale.shape[1]
    padded = np.zeros((n, n_blocks * group), dtype=np.uint8)
    padded[:, :k] = unordered.astype(np.uint8)  # padding codes: 0, as RTN stores them
    return BlockQuantized(padded.reshape(n, n_blocks, group), scale.astype(np.float32), zero.astype(np.uint8),
                          k, bits, group, symmetric)


def hessian_error(weight: np.ndarray, dequantized: np.ndarray, hessian: np.ndarray) -> float:
    """tr(ΔWᵀ H ΔW) / tr(Wᵀ H W): the relative squared output error on the calibration inputs."""
    w = np.asarray(weight, np.float64)
    d = np.asarray(dequantized, np.float64) - w
    den = float(((hessian @ w) * w).sum())
    return float(((hessian @ d) * d).sum()) / max(den, 1e-30)


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
    """H = 2XᵀX/rows of each named float tensor (last axis = K), streamed through ONNX Runtime."""
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
