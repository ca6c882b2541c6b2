"""Packing and a float64 reference for ai.onnxcomp::MatMulInt4 (the contract in README.md).

Pure numpy; used by the tests and the GPU benchmark. ``pack_int4`` lays out exactly what the op
reads (the same bytes as ONNX Runtime's com.microsoft.MatMulNBits with bits=4).
"""

from __future__ import annotations

import numpy as np

DOMAIN = "ai.onnxcomp"
OP_TYPE = "MatMulInt4"
GROUP_SIZES = (32, 64, 128)


def n_blocks(k: int, group_size: int) -> int:
    return -(-k // group_size)


def pack_int4(q: np.ndarray, group_size: int) -> np.ndarray:
    """q: uint8 [N, K] with values 0..15 -> B uint8 [N, n_blocks, group_size // 2].

    Element (n, k) goes to block k // g, byte (k % g) // 2, low nibble if k % g is even.
    Padding nibbles (k >= K) are 0.
    """
    q = np.asarray(q)
    if q.ndim != 2 or q.dtype != np.uint8 or (q > 15).any():
        raise ValueError("q must be a uint8 [N, K] array with values in 0..15")
    n, k = q.shape
    nb = n_blocks(k, group_size)
    padded = np.zeros((n, nb * group_size), np.uint8)
    padded[:, :k] = q
    pairs = padded.reshape(n, nb, group_size // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)


def unpack_int4(b: np.ndarray, k: int) -> np.ndarray:
    """Inverse of pack_int4: B [N, n_blocks, g/2] -> q uint8 [N, K]."""
    n, nb, half = b.shape
    q = np.stack([b & 15, b >> 4], axis=-1).reshape(n, nb * half * 2)
    return q[:, :k].astype(np.uint8)


def pack_zero_points(zp: np.ndarray) -> np.ndarray:
    """zp: uint8 [N, n_blocks] in 0..15 -> uint8 [N, ceil(n_blocks / 2)].

    Block b goes to byte b // 2, low nibble for even b."""
    zp = np.asarray(zp, np.uint8)
    n, nb = zp.shape
    padded = np.zeros((n, 2 * -(-nb // 2)), np.uint8)
    padded[:, :nb] = zp
    return (padded[:, 0::2] | (padded[:, 1::2] << 4)).astype(np.uint8)


def unpack_zero_points(zp_packed: np.ndarray, nb: int) -> np.ndarray:
    n = zp_packed.shape[0]
    return np.stack([zp_packed & 15, zp_packed >> 4], axis=-1).reshape(n, -1)[:, :nb]


def dequantize(
    b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, k: int, group_size: int
) -> np.ndarray:
    """float64 W [N, K] = (q - zp) * scale per group."""
    q = unpack_int4(b, k).astype(np.float64)
    nb = n_blocks(k, group_size)
    zp = (
        np.full((b.shape[0], nb), 8.0)
        if zero_points is None
        else unpack_zero_points(zero_points, nb).astype(np.float64)
    )
    blk = np.arange(k) // group_size
    return (q - zp[:, blk]) * scales.astype(np.float64)[:, blk]


def matmul_int4_reference(a, b, scales, zero_points=None, bias=None, *, k: int, group_size: int) -> np.ndarray:
    """float64 Y[..., N] = A[..., K] . dequant(B)^T (+ bias)."""
    w = dequantize(b, scales, zero_points, k, group_size)
    y = np.asarray(a, np.float64) @ w.T
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def random_operands(
    rng: np.random.Generator,
    m_shape,
    k: int,
    n: int,
    group_size: int,
    *,
    dtype=np.float32,
    scale_dtype=None,
    asymmetric: bool = True,
    bias: bool = True,
):
    """Random A, packed B, scales, zero points, bias of the given shapes (a dict)."""
    nb = n_blocks(k, group_size)
    q = rng.integers(0, 16, size=(n, k), dtype=np.uint8)
    a = rng.standard_normal((*m_shape, k)).astype(dtype)
    scales = (rng.uniform(0.5, 1.5, size=(n, nb)) / np.sqrt(k) * 0.5).astype(scale_dtype or dtype)
    zp = pack_zero_points(rng.integers(0, 16, size=(n, nb), dtype=np.uint8)) if asymmetric else None
    b_ = rng.standard_normal(n).astype(dtype) if bias else None
    return {"A": a, "B": pack_int4(q, group_size), "scales": scales, "zero_points": zp, "bias": b_}
