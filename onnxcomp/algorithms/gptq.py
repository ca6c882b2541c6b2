"""GPTQ for blockwise weight-only quantization (pure numpy).

GPTQ (Frantar et al., 2022) quantizes the input rows of W[K, N] one at a time and spreads each
row's rounding error over the rows not yet quantized, weighted by the inverse Hessian of the
layer's squared output error, H = 2 XᵀX / rows (X: the calibration inputs [rows, K]). Here:

- dampening: H + damp · mean(diag H) · I; inputs that are always 0 (diag 0) get weight rows 0;
- groups: every block of `group` rows along K gets one scale (and zero point), in RTN's layout
  (`onnxcomp.algorithms.blockwise.BlockQuantized`). With `static_groups` they are fixed from the
  original weight before any update (RTN's rule); otherwise ("lazy", the paper's choice) each block's are
  taken from the partly updated weight when GPTQ reaches the block's first row. `act_order`
  visits the rows by decreasing diag(H) and always uses static groups (each row keeps its own
  block's scale, so no g_idx is needed). `clip_search` picks each block's range ratio from
  `blockwise.CLIP_GRID` by the block's output error δᵀ·H_block·δ (H's diagonal block);
- blocked lazy updates: rows are processed in blocks of `block` and the remaining rows are
  updated once per block with one matrix product; inside a block, the same again in pieces of
  SUB_BLOCK rows (the same arithmetic in a different order; with W kept in its [K, N] layout, so a
  row is contiguous, a 576 × 1536 layer quantizes ~2× faster than row by row in [N, K]);
- the output columns are independent, so they are processed in chunks of `CHUNK` columns: a large
  N (an LM head) needs memory for one chunk at a time, not for several float64 copies of W.

`hessian_errors` gives tr(ΔWᵀ H ΔW) / tr(Wᵀ H W), the relative output error on the calibration
inputs that GPTQ minimizes (RTN's can be computed the same way for comparison).

The Hessians come from calibration (`onnxcomp.calibration.staged`); this module runs no model.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.algorithms.blockwise import (
    CLIP_GRID,
    BlockQuantized,
    check_settings,
    search_block_range,
    to_blocks,
)
from onnxcomp.algorithms.quant_math import quantize_weight_per_channel
from onnxcomp.errors import OnnxcompError

CHUNK = 4096  # output columns per GPTQ chunk
SUB_BLOCK = 16  # rows updated one at a time inside a block (`_sub_blocks`)


def _group_params(blocks, bits, symmetric, grams, clip_search, signed_scales):
    """(scale, zero) [N, n_blocks] for blocks [N, n_blocks, g]; scales rounded to float32 as stored.
    With `clip_search`, each block's ratio minimizes δᵀ·G·δ (grams [n_blocks, g, g]) or Σδ²."""
    ratios = CLIP_GRID if clip_search else (1.0,)
    return search_block_range(blocks, bits, symmetric, ratios, grams, signed_scales, float32_scales=True)


def _diagonal_blocks(hessian: np.ndarray, group: int, n_blocks: int) -> np.ndarray:
    """H's diagonal blocks [n_blocks, group, group] (a last partial block padded with zeros)."""
    k = hessian.shape[0]
    out = np.zeros((n_blocks, group, group))
    for b in range(n_blocks):
        g0, g1 = b * group, min((b + 1) * group, k)
        out[b, : g1 - g0, : g1 - g0] = hessian[g0:g1, g0:g1]
    return out


def gptq_quantize(
    weight: np.ndarray,
    hessian: np.ndarray,
    bits: int = 4,
    group: int = 128,
    symmetric: bool = True,
    damp: float = 0.01,
    act_order: bool = False,
    block: int = 128,
    static_groups: bool = True,
    clip_search: bool = False,
    signed_scales: bool = False,
) -> BlockQuantized:
    """GPTQ of W[K, N] given H[K, K] = 2XᵀX/rows of its inputs; the layout is RTN's (BlockQuantized)."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise OnnxcompError(f"GPTQ needs a 2-D weight, got shape {weight.shape}")
    check_settings(bits, group, weight.shape[0])
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
        w = np.array(weight[:, c0:c1], dtype=np.float64)  # [K, n_chunk]: one row per input channel
        if static:  # from the original weight (dead rows included), RTN's rule
            scale, zero = _group_params(to_blocks(w, group), bits, symmetric, grams, clip_search, signed_scales)
        w[dead] = 0.0
        if not static:
            scale, zero = np.ones((c1 - c0, n_blocks)), np.zeros((c1 - c0, n_blocks))
        w = w[order]
        chunk_codes = _gptq_rows(
            w, hinv, order, scale, zero, bits, group, block, symmetric, static, grams, clip_search, signed_scales
        )
        codes[c0:c1, order] = chunk_codes.T
        scales[c0:c1], zeros[c0:c1] = scale, zero
    return BlockQuantized(codes.reshape(n, n_blocks, group), scales, zeros, k, bits, group, symmetric)


def _gptq_rows(
    w, hinv, order, scale, zero, bits, group, block, symmetric, static, grams, clip_search, signed_scales
) -> np.ndarray:
    """GPTQ's loop over the visited input channels, the rows of w [K, n] (already permuted by `order`;
    updated in place); fills `scale`/`zero` [n, n_blocks] in place when groups are lazy; returns
    uint8 codes [K, n] in visiting order."""
    k, n = w.shape
    levels = 2**bits - 1
    group_of = order // group
    codes = np.empty((k, n), dtype=np.uint8)
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[i1:i2].copy()
        err1 = np.zeros_like(w1)
        h1 = hinv[i1:i2, i1:i2]
        for j1, j2 in _sub_blocks(i1, i2, group, static):
            for i in range(j1, j2):
                row = w1[i]
                g = group_of[i1 + i]
                if not static and (i1 + i) % group == 0:  # lazy groups (no act_order): this block's first row
                    end = min(i1 + i + group, k)
                    current = np.concatenate([w1[i : min(i2 - i1, end - i1)], w[i2 : max(end, i2)]], axis=0)
                    s, z = _group_params(
                        current.T[:, None, :],
                        bits,
                        symmetric,
                        None if grams is None else grams[g : g + 1, : end - i1 - i, : end - i1 - i],
                        clip_search,
                        signed_scales,
                    )
                    scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
                s, z = scale[:, g], zero[:, g]
                c = np.clip(np.round(row / s) + z, 0, levels)
                codes[i1 + i] = c
                e = (row - (c - z) * s) / h1[i, i]
                w1[i:j2] -= np.outer(h1[i, i:j2], e)
                err1[i] = e
            w1[j2:] -= h1[j1:j2, j2:].T @ err1[j1:j2]
        w[i2:] -= hinv[i1:i2, i2:].T @ err1
    return codes


def _sub_blocks(i1: int, i2: int, group: int, static: bool):
    """(start, end) offsets of SUB_BLOCK-row pieces of the block [i1, i2): inside a piece each row's
    error updates the next rows one at a time, the rest of the block once per piece (a matrix
    product). With lazy groups every group starts a piece, so its first row sees every earlier update."""
    j1 = 0
    while j1 < i2 - i1:
        j2 = min(j1 + SUB_BLOCK, i2 - i1)
        if not static:
            j2 = min(j2, (i1 + j1) // group * group + group - i1)
        yield j1, j2
        j1 = j2


def hessian_errors(weight: np.ndarray, hessian: np.ndarray, *dequantized: np.ndarray) -> list[float]:
    """tr(ΔWᵀ H ΔW) / tr(Wᵀ H W) for each dequantized version of W: the relative squared output error on
    the calibration inputs (float32 products: a ratio of sums of squares needs no more)."""
    h = np.asarray(hessian, np.float32)
    den, nums = 0.0, [0.0] * len(dequantized)
    for c0 in range(0, weight.shape[1], CHUNK):
        w = np.asarray(weight[:, c0 : c0 + CHUNK], np.float64)
        den += _quadratic(h, w)
        for i, d in enumerate(dequantized):
            nums[i] += _quadratic(h, np.asarray(d[:, c0 : c0 + CHUNK], np.float64) - w)
    return [num / max(den, 1e-30) for num in nums]


def _quadratic(h: np.ndarray, x: np.ndarray) -> float:
    """tr(xᵀ h x) with float32 products, summed in float64."""
    x = x.astype(np.float32)
    return float(((h @ x) * x).sum(dtype=np.float64))


def gptq_per_channel(weight: np.ndarray, hessian: np.ndarray, damp: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per-output-channel codes of W[K, N] chosen by GPTQ: (int8 [K, N], float32 scales [N]).

    One block of all K rows per column with RTN's scale (absmax / 127, or / 128 when the extreme is
    negative), so only the codes differ from round-to-nearest; codes lie in [-128, 127] (zero point 0)
    and dequantize as codes · scale (`int8_weight` with a Hessian: `weight_rounding: gptq`)."""
    k = weight.shape[0]
    q = gptq_quantize(weight, hessian, 8, k, True, damp)
    codes = q.codes[:, 0, :k].astype(np.int16) - q.zero_points[:, :1].astype(np.int16)
    return codes.T.astype(np.int8), q.scales[:, 0].astype(np.float32)


WEIGHT_ROUNDINGS = ("nearest", "gptq")  # the `weight_rounding` values of quantize_qdq and plan_fallback


def gptq_can_round(linear) -> bool:
    """Whether `int8_weight` takes GPTQ's codes for this linear: a MatMul/Gemm with a plain 2-D float
    weight (Convs keep nearest rounding)."""
    return linear is not None and linear.node.op_type in ("MatMul", "Gemm") and not linear.skip_reason()


def int8_weight(linear, hessian: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A linear's (`onnxcomp.ir.linears.Linear`) int8 per-channel weight in its own layout:
    (int8 codes, float32 scales over `linear.out_axis`). Round-to-nearest without a Hessian;
    with one (H of the layer's input, a 2-D MatMul/Gemm weight), GPTQ's codes, same scales."""
    if hessian is None:
        return quantize_weight_per_channel(linear.array, linear.out_axis)
    codes, scales = gptq_per_channel(linear.weight_kn(), hessian)
    return (codes.T if linear.transposed else codes), scales
