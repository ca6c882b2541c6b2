"""Quantization arithmetic as pure numpy functions (no graph access), shared by the passes."""

import numpy as np

TINY = float(np.finfo(np.float32).tiny)
ACTIVATION_DTYPES = {"uint8": (np.uint8, 0, 255), "int8": (np.int8, -128, 127)}


def activation_qparams(lo: float, hi: float, dtype: str = "uint8") -> tuple[np.float32, np.integer]:
    """Per-tensor scale and zero point for the range [lo, hi] (widened to contain 0).

    uint8 is asymmetric (zero point anywhere in 0..255); int8 is symmetric (zero point 0).
    """
    if dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"unknown activation dtype {dtype!r} (choose uint8 or int8)")
    np_type, qmin, qmax = ACTIVATION_DTYPES[dtype]
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype == "int8":
        bound = max(abs(lo), abs(hi))
        scale = max(bound / 127.0, TINY) if bound > 0 else 1.0
        return np.float32(scale), np_type(0)
    scale = max((hi - lo) / (qmax - qmin), TINY) if hi > lo else 1.0
    zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return np.float32(scale), np_type(zero_point)


def quantize_weight_per_channel(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per-channel quantization along `axis`: returns (int8 values, float32 scales).

    Values are in [-127, 127] (the -128 code is unused so that the range is symmetric).
    A channel of zeros gets scale 1.
    """
    weight = np.asarray(weight, dtype=np.float32)
    axis = axis % weight.ndim
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    absmax = np.abs(weight).max(axis=reduce_axes) if reduce_axes else np.abs(weight)
    scales = np.where(absmax > 0, np.maximum(absmax / 127.0, TINY), 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    q = np.clip(np.rint(weight / scales.reshape(shape)), -127, 127).astype(np.int8)
    return q, scales


def quantize_bias(
    bias: np.ndarray, input_scale: float, weight_scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """int32 bias with scale input_scale * weight_scale per channel (what integer kernels add).

    Returns None when some channel would overflow int32 (a near-dead channel with a real bias):
    the caller then keeps the bias in float rather than clip it.
    """
    scales = (np.float32(input_scale) * np.asarray(weight_scales, dtype=np.float32)).astype(np.float32)
    scales = np.broadcast_to(scales, np.shape(bias)).astype(np.float32)
    q = np.rint(np.asarray(bias, dtype=np.float64) / np.maximum(scales, TINY))
    if np.abs(q).max(initial=0) > 2**31 - 1:
        return None
    return q.astype(np.int32), scales


def dequantize(q: np.ndarray, scale, zero_point=0, axis: int | None = None) -> np.ndarray:
    """Inverse of the above, following ONNX DequantizeLinear semantics."""
    scale = np.asarray(scale, dtype=np.float32)
    zero_point = np.asarray(zero_point)
    if axis is not None and scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape) if zero_point.ndim else zero_point
    return (q.astype(np.float32) - zero_point.astype(np.float32)) * scale
