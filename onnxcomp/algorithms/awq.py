"""AWQ arithmetic (pure numpy): activation-aware per-input-channel scales for weight-only quantization.

AWQ (Lin et al., 2024) protects the weight rows that meet large activations: a linear group
Y = X·W is rewritten as (X/s)·(diag(s)·W) with s = mean|X|^α per input channel, and α is chosen
on a grid by the output error of the *quantized* group on calibration rows of X:

    err(α) = ‖(X/s)·Q(diag(s)·W) − X·W‖² / ‖X·W‖²,   Q = blockwise RTN (onnxcomp.algorithms.blockwise).

α = 0 is s = 1, plain RTN, so the chosen α never does worse than RTN by this measure. As in
SmoothQuant, scales are chosen per producer channel (one V channel feeds several grouped-query
heads) and expanded by the group's channel map. After scaling, each block's clipping ratio is
searched on the same rows (`block_grams`: output error instead of weight error).
"""

import numpy as np

from onnxcomp.algorithms.blockwise import block_grams, dequantize_blockwise, quantize_blockwise
from onnxcomp.algorithms.smoothing import ALPHA_GRID, merge_by_map

MIN_MAGNITUDE = 1e-4  # relative to the largest channel: keeps s finite for silent channels


def activation_scales(mean_abs: np.ndarray, alpha: float, channel_map: np.ndarray, width: int) -> np.ndarray:
    """t = a^α per producer channel (a = the largest mean |x| among the input channels it feeds),
    normalized so that max(t)·min(t) = 1."""
    a = merge_by_map(mean_abs, channel_map, width)
    a = np.maximum(a, MIN_MAGNITUDE * max(float(a.max()), 1e-30))
    t = a**alpha
    return t / np.sqrt(t.max() * t.min())


def quantized_output_error(
    x: np.ndarray,
    weights: list[tuple[np.ndarray, int, bool]],
    s: np.ndarray,
    group: int,
    signed_scales: bool = False,
    reference: float | None = None,
) -> float:
    """Relative squared output error of the group scaled by s and quantized by RTN, on rows x [R, K]:
    ‖x·(Q(diag(s)·W)/s − W)‖² summed over the members [(W [K, N], bits, symmetric)], divided by
    `reference` (default: ‖x·W‖² summed, `output_energy`)."""
    x = np.asarray(x, dtype=np.float32)
    s32 = s.astype(np.float32)[:, None]
    error = 0.0
    for w, bits, symmetric in weights:
        back = dequantize_blockwise(
            quantize_blockwise(w * s[:, None], bits, group, symmetric, signed_scales=signed_scales)
        )
        error += float(np.square(x @ (back / s32 - w.astype(np.float32))).sum())
    reference = output_energy(x, weights) if reference is None else reference
    return error / max(reference, 1e-30)


def output_energy(x: np.ndarray, weights: list[tuple[np.ndarray, int, bool]]) -> float:
    """‖x·W‖² summed over the group's members."""
    x = np.asarray(x, dtype=np.float32)
    return sum(float(np.square(x @ w.astype(np.float32)).sum()) for w, _, _ in weights)


def search_alpha(
    x: np.ndarray,
    weights: list[tuple[np.ndarray, int, bool]],
    channel_map: np.ndarray,
    width: int,
    group: int,
    grid=ALPHA_GRID,
    signed_scales: bool = False,
) -> tuple[float, np.ndarray, dict]:
    """(α, producer scales t, {α: error}) with the smallest quantized output error (ties: smaller α)."""
    mean_abs = np.abs(np.asarray(x, dtype=np.float64)).mean(axis=0)
    reference = output_energy(x, weights)
    errors, scales = {}, {}
    for alpha in grid:
        scales[alpha] = activation_scales(mean_abs, alpha, channel_map, width)
        errors[alpha] = quantized_output_error(x, weights, scales[alpha][channel_map], group, signed_scales, reference)
    best = min(grid, key=lambda a: (errors[a], a))
    return best, scales[best], errors


def quantize_with_clipping(
    weight: np.ndarray, x: np.ndarray, bits: int, group: int, symmetric: bool, signed_scales: bool = False
):
    """Blockwise RTN of W [K, N] whose clipping ratio per block minimizes the output error on rows x [R, K]."""
    return quantize_blockwise(
        weight, bits, group, symmetric, clip_search=True, grams=block_grams(x, group), signed_scales=signed_scales
    )


def relative_output_error(x: np.ndarray, exact: np.ndarray, approx: np.ndarray) -> float:
    """‖x·approx − x·exact‖ / ‖x·exact‖ (not squared, for the report)."""
    x = np.asarray(x, dtype=np.float32)
    reference = x @ exact.astype(np.float32)
    return float(np.linalg.norm(x @ approx.astype(np.float32) - reference) / max(np.linalg.norm(reference), 1e-30))
