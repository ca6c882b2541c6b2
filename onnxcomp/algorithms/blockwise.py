"""Blockwise weight-only quantization arithmetic (pure numpy): int4/int8, per group along K.

A MatMul weight W[K, N] is cut, per output column n, into blocks of `group` consecutive input
rows (`group` = K: one block per column, i.e. per-channel scales). When K is not a multiple of the
group the last block is padded (its codes stored as 0); padded codes never meet an input, since the
activation stops at K. Each block gets a scale, and with `symmetric=False` a zero point:

    w ≈ (u − z) · s,   u ∈ [0, 2^bits − 1] (unsigned codes), z = 2^(bits−1) when symmetric.

Symmetric blocks keep their largest-magnitude value w* exact. With `signed_scales` (ONNX Runtime's
own rule, for MatMulNBits and MatMulInt4) s = w* / −2^(bits−1): w* maps to −8 whatever its sign,
so the step is always max|w| / 8 and s is negative when w* is positive. Without (the portable QDQ
format: TensorRT requires positive scales) s = max|w| / 2^(bits−1) when w* is negative (it maps
to −8) and max|w| / (2^(bits−1) − 1) when positive (it maps to +7), a 14% coarser step for those
blocks (choosing per block whichever of /7 and /8 moves the block less was tried and did not help
SmolLM2: the outliers matter more than the block's mean error). Asymmetric blocks map [min, max]
onto [0, 2^bits − 1]. An optional clip search shrinks each block's range by the ratio in a grid
that minimizes the block's squared weight error (RTN with clipping) or, given the Gram matrices
XᵀX of calibration inputs per block (`block_grams`), the block's squared output error ‖X·ΔW‖²
(AWQ's clipping).

Storage layout (the one place it is defined; ONNX Runtime's MatMulNBits and the project's own
`ai.onnxcomp.MatMulInt4` read exactly this): codes [N, n_blocks, group] packed two per byte along
K, element k at byte (k % group) // 2 of block k // group, low nibble for even k; scales
[N, n_blocks]; zero points [N, ceil(n_blocks / 2)] packed the same way along blocks (4-bit) or
[N, n_blocks] (8-bit).
"""

from dataclasses import dataclass

import numpy as np

from onnxcomp.errors import OnnxcompError

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
CLIP_GRID = tuple(round(1.0 - 0.05 * i, 2) for i in range(11))  # 1.0 … 0.5


@dataclass
class BlockQuantized:
    codes: np.ndarray  # uint8 [N, n_blocks, group], unsigned codes
    scales: np.ndarray  # float32 [N, n_blocks]
    zero_points: np.ndarray  # uint8 [N, n_blocks]
    k: int
    bits: int
    group: int
    symmetric: bool

    @property
    def n(self) -> int:
        return self.codes.shape[0]

    @property
    def n_blocks(self) -> int:
        return self.codes.shape[1]


def check_settings(bits: int, group: int, k: int | None = None) -> None:
    """`group` one of GROUP_SIZES, or all `k` rows of the weight (one block per column: per channel)."""
    if bits not in BITS:
        raise OnnxcompError(f"weight-only quantization: bits must be one of {', '.join(map(str, BITS))}, not {bits!r}")
    if group not in GROUP_SIZES and group != k:
        raise OnnxcompError(
            f"weight-only quantization: group_size must be one of {', '.join(map(str, GROUP_SIZES))}, not {group!r}"
        )


def to_blocks(weight: np.ndarray, group: int) -> np.ndarray:
    """W[K, N] → [N, n_blocks, group]; the padding repeats row K−1, so it moves no block's range."""
    k, n = weight.shape
    n_blocks = -(-k // group)
    padded = np.pad(np.asarray(weight, dtype=np.float64), ((0, n_blocks * group - k), (0, 0)), mode="edge")
    return padded.T.reshape(n, n_blocks, group)


def block_scales(
    blocks: np.ndarray, bits: int, symmetric: bool, ratio, signed_scales: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (scale, zero point) for blocks [..., group], ranges shrunk by `ratio`."""
    levels = 2**bits - 1
    half = 2 ** (bits - 1)
    if symmetric:
        idx = np.abs(blocks).argmax(axis=-1)[..., None]
        extreme = np.take_along_axis(blocks, idx, axis=-1)[..., 0] * ratio
        if signed_scales:
            scale = -extreme / half
        else:
            scale = np.where(extreme < 0, -extreme / half, extreme / (half - 1))
        zero = np.full(scale.shape, half, dtype=np.float64)
    else:
        lo, hi = blocks.min(axis=-1) * ratio, blocks.max(axis=-1) * ratio
        scale = (hi - lo) / levels
        zero = np.clip(np.round(-lo / np.where(scale > 0, scale, 1.0)), 0, levels)
    scale = np.where(scale != 0, scale, 1.0)  # an all-zero block: any scale reproduces it
    return scale, zero


def block_codes(blocks: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(np.round(blocks / scale[..., None]) + zero[..., None], 0, 2**bits - 1)


def block_grams(x: np.ndarray, group: int) -> np.ndarray:
    """XᵀX of input rows X [R, K] per block of `group` input channels: [n_blocks, group, group]
    (the padding channels of a last partial block are 0)."""
    x = np.asarray(x, dtype=np.float64)
    k = x.shape[1]
    n_blocks = -(-k // group)
    blocks = np.pad(x, ((0, 0), (0, n_blocks * group - k))).reshape(len(x), n_blocks, group).transpose(1, 0, 2)
    return blocks.transpose(0, 2, 1) @ blocks


def block_errors(delta: np.ndarray, grams: np.ndarray | None) -> np.ndarray:
    """Per block [N, n_blocks]: Σ δ² (weight error), or δᵀ·G·δ (output error) given grams [n_blocks, g, g],
    in float32 products unless a value leaves float32's range."""
    if grams is None:
        return (delta**2).sum(axis=-1)
    by_block = delta.transpose(1, 0, 2)  # [n_blocks, N, g]
    with np.errstate(over="ignore", invalid="ignore"):  # float32 products: they only rank ratios
        errors = _quadratic_forms(by_block.astype(np.float32), grams.astype(np.float32))
    if np.isfinite(errors).all():
        return errors
    return _quadratic_forms(by_block, grams)  # magnitudes beyond float32's range: float64 again


def _quadratic_forms(by_block: np.ndarray, grams: np.ndarray) -> np.ndarray:
    return ((by_block @ grams) * by_block).sum(axis=-1, dtype=np.float64).T


def search_block_range(
    blocks: np.ndarray,
    bits: int,
    symmetric: bool,
    ratios,
    grams: np.ndarray | None = None,
    signed_scales: bool = False,
    float32_scales: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Per block of blocks [N, n_blocks, g], the (scale, zero point) of the range ratio in `ratios`
    with the smallest error: Σδ², or δᵀ·G·δ given grams [n_blocks, g, g] (ties: the earlier ratio).
    `float32_scales` rounds each candidate scale to float32 (as stored) before it is judged."""
    best_err = best_scale = best_zero = None
    for ratio in ratios:
        scale, zero = block_scales(blocks, bits, symmetric, ratio, signed_scales)
        if float32_scales:
            scale = scale.astype(np.float32).astype(np.float64)
        if len(ratios) == 1:
            return scale, zero
        err = block_errors(
            (block_codes(blocks, scale, zero, bits) - zero[..., None]) * scale[..., None] - blocks, grams
        )
        if best_err is None:
            best_err, best_scale, best_zero = err, scale, zero
        else:
            better = err < best_err
            best_err = np.where(better, err, best_err)
            best_scale = np.where(better, scale, best_scale)
            best_zero = np.where(better, zero, best_zero)
    return best_scale, best_zero


def quantize_blockwise(
    weight: np.ndarray,
    bits: int = 4,
    group: int = 128,
    symmetric: bool = True,
    clip_search: bool = False,
    grams: np.ndarray | None = None,
    signed_scales: bool = False,
) -> BlockQuantized:
    """Round-to-nearest quantization of W[K, N] per block of `group` rows; with `clip_search`, each
    block's range ratio minimizes its weight error, or its output error when `grams` (block_grams
    of calibration inputs) is given. `signed_scales`: see the module docstring (symmetric only)."""
    weight = np.asarray(weight)
    if weight.ndim != 2:
        raise OnnxcompError(f"weight-only quantization needs a 2-D weight, got shape {weight.shape}")
    check_settings(bits, group, weight.shape[0])
    blocks = to_blocks(weight, group)
    best_scale, best_zero = search_block_range(
        blocks, bits, symmetric, CLIP_GRID if clip_search else (1.0,), grams, signed_scales
    )
    scale32 = best_scale.astype(np.float32)  # the stored scale is what dequantization will use
    codes = block_codes(blocks, scale32.astype(np.float64), best_zero, bits).astype(np.uint8)
    codes[:, -1, weight.shape[0] - (blocks.shape[1] - 1) * group :] = 0  # padding codes: 0
    return BlockQuantized(codes, scale32, best_zero.astype(np.uint8), weight.shape[0], bits, group, symmetric)


def dequantize_blockwise(q: BlockQuantized) -> np.ndarray:
    """The float32 weight W[K, N] that the stored codes, scales and zero points represent."""
    values = (q.codes.astype(np.float32) - q.zero_points[..., None].astype(np.float32)) * q.scales[..., None]
    return values.reshape(q.n, -1)[:, : q.k].T.copy()


def pack_along_last(values: np.ndarray) -> np.ndarray:
    """uint8 values < 16, two per byte along the last axis (low nibble first); odd length padded with 0."""
    values = np.asarray(values, dtype=np.uint8)
    if values.shape[-1] % 2:
        values = np.concatenate([values, np.zeros(values.shape[:-1] + (1,), np.uint8)], axis=-1)
    return (values[..., 0::2] | (values[..., 1::2] << 4)).astype(np.uint8)


def unpack_along_last(packed: np.ndarray, count: int) -> np.ndarray:
    packed = np.asarray(packed, dtype=np.uint8)
    both = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(packed.shape[:-1] + (-1,))
    return both[..., :count]


def packed_codes(q: BlockQuantized) -> np.ndarray:
    """Codes as stored: [N, n_blocks, group / 2] bytes for 4 bits, [N, n_blocks, group] for 8."""
    return pack_along_last(q.codes) if q.bits == 4 else q.codes


def packed_zero_points(q: BlockQuantized) -> np.ndarray:
    """Zero points as stored: [N, ceil(n_blocks / 2)] bytes for 4 bits, [N, n_blocks] for 8."""
    return pack_along_last(q.zero_points) if q.bits == 4 else q.zero_points


def signed_codes_kn(q: BlockQuantized) -> tuple[np.ndarray, np.ndarray | None]:
    """For DequantizeLinear with blocks along axis 0: codes [K, N] (signed when symmetric, code − z)
    and zero points [n_blocks, N] (None when symmetric)."""
    codes = q.codes.reshape(q.n, -1)[:, : q.k].T
    if q.symmetric:
        return (codes.astype(np.int16) - 2 ** (q.bits - 1)).astype(np.int8), None
    return codes.copy(), q.zero_points.T.copy()


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """‖approx − exact‖ / ‖exact‖."""
    return float(np.linalg.norm(approx - exact) / max(np.linalg.norm(exact), 1e-30))
