"""How much a layer's quantization hurts: proxies from weights and Grams, end-to-end output metrics.

Proxies (cheap, for every layer × scheme): the Hessian-weighted error tr(ΔWᵀ H ΔW) with H the Gram
2XᵀX/rows of the layer's calibration inputs — the mean squared error the quantized weight adds to
the layer's output — and the plain weight error ‖ΔW‖². Measured sensitivity compares the model's
outputs with and without the layer quantized: the mean KL divergence of next-token distributions
for language-model logits, the relative squared L2 error otherwise. `spearman` says how well a
proxy ranks layers against the measurement.
"""

import numpy as np

CHUNK = 4096  # output columns per step: bounds the float64 temporaries


def weighted_error(delta_kn: np.ndarray, hessian: np.ndarray) -> float:
    """tr(ΔWᵀ H ΔW) for ΔW [K, N] and H [K, K]."""
    total = 0.0
    for c0 in range(0, delta_kn.shape[1], CHUNK):
        d = np.asarray(delta_kn[:, c0 : c0 + CHUNK], np.float64)
        total += float(((hessian @ d) * d).sum())
    return total


def kl_from_log_probs(reference_log_probs: np.ndarray, logits: np.ndarray) -> float:
    """Mean over positions of KL(reference ‖ softmax(logits)) along the last axis, in nats; the
    reference given as log-probabilities (`log_softmax`, computed once and reused over candidates)."""
    q_log = log_softmax(logits)
    return float((np.exp(reference_log_probs) * (reference_log_probs - q_log)).sum(axis=-1).mean())


def relative_squared_error(reference: np.ndarray, actual: np.ndarray) -> float:
    """‖actual − reference‖² / ‖reference‖²."""
    ref = np.asarray(reference, np.float64)
    return float(((np.asarray(actual, np.float64) - ref) ** 2).sum() / max((ref**2).sum(), 1e-30))


def spearman(a, b) -> float:
    """Spearman rank correlation of two equal-length sequences (ties get their mean rank)."""
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties: mean rank
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
