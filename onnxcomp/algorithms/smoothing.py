"""SmoothQuant arithmetic (pure numpy): per-channel smoothing scales and the α search.

A linear Y = X·W is unchanged by X → X/s, W → diag(s)·W. Choosing
s_j = max|X_j|^α / max|W_j|^(1−α) moves activation outliers into the weights, so both sides
quantize well. Producers may feed several input channels from one of their channels (grouped
attention heads), so scales are chosen per *producer* channel and expanded by a channel map.
"""

import numpy as np

SCALE_LIMITS = (1e-5, 1e5)
ALPHA_GRID = tuple(round(a, 2) for a in np.linspace(0.0, 1.0, 21))


def merge_by_map(values: np.ndarray, channel_map: np.ndarray, size: int) -> np.ndarray:
    """Per producer channel, the max of `values` over the input channels it feeds (0 if none)."""
    merged = np.zeros(size, dtype=np.float64)
    np.maximum.at(merged, channel_map, np.asarray(values, dtype=np.float64))
    return merged


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s = a^α / w^(1−α) per channel; channels with no signal (a or w = 0) keep s = 1."""
    a = np.asarray(act_absmax, dtype=np.float64)
    w = np.asarray(weight_absmax, dtype=np.float64)
    live = (a > 0) & (w > 0)
    s = np.ones_like(a)
    s[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
    return np.clip(s, *SCALE_LIMITS)


def producer_scales(act_absmax, weight_absmax, channel_map, producer_channels, alpha) -> np.ndarray:
    """Scales per producer channel; input channel j of the group is scaled by result[channel_map[j]].

    Where one producer channel feeds several input channels (grouped attention heads) they
    share one scale, chosen from their joint maxima.
    """
    a = merge_by_map(act_absmax, channel_map, producer_channels)
    w = merge_by_map(weight_absmax, channel_map, producer_channels)
    return smoothing_scales(a, w, alpha)


def fake_quant_symmetric(x: np.ndarray, absmax: np.ndarray | float, axis: int | None = None) -> np.ndarray:
    """Round to int8 with a symmetric scale absmax/127 (per tensor, or per index along `axis`)."""
    scale = np.maximum(np.asarray(absmax, dtype=np.float64), 1e-30) / 127.0
    if axis is not None:
        shape = [1] * x.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    return np.clip(np.round(x / scale), -127, 127) * scale


def quantized_output_error(
    samples: np.ndarray, weight: np.ndarray, act_absmax: np.ndarray, s: np.ndarray, reference: np.ndarray | None = None
) -> float:
    """Relative error of the W8A8 output after smoothing by `s`.

    `samples` [R, K] are calibration rows of the input, `weight` [K, N] the group's weights side
    by side, `act_absmax` [K] the calibrated per-channel maxima; `reference` = samples·weight when
    known. Activations: int8 per tensor with the calibrated range; weights: int8 per output channel.
    The quantized product runs in float32 (its operands are int8 grid values; the error measured is
    ~1e-2, float32's ~1e-6).
    """
    x = np.asarray(samples, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    reference = x @ w if reference is None else reference
    xs = fake_quant_symmetric(x / s, float(np.max(act_absmax / s)))
    ws = w * s[:, None]
    wq = fake_quant_symmetric(ws, np.abs(ws).max(axis=0), axis=1)
    product = xs.astype(np.float32) @ wq.astype(np.float32)
    return float(np.linalg.norm(product - reference) / max(np.linalg.norm(reference), 1e-30))


def search_alpha(samples, weight, act_absmax, scales_for, grid=ALPHA_GRID) -> tuple[float | None, dict]:
    """The α in `grid` with the smallest quantized output error (ties: the smaller α), or None
    when no α beats leaving the group unsmoothed (s = 1, error under key None)."""
    reference = np.asarray(samples, dtype=np.float64) @ np.asarray(weight, dtype=np.float64)

    def error(s):
        return quantized_output_error(samples, weight, act_absmax, s, reference)

    errors = {None: error(np.ones(len(act_absmax)))}
    errors.update({alpha: error(scales_for(alpha)) for alpha in grid})
    best = min(grid, key=lambda a: (errors[a], a))
    return (best if errors[best] < errors[None] else None), errors
