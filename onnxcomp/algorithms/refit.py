"""Recovery after removing input channels of a linear layer, in closed form (no training).

A consumer computes y = x·W + b with x [K] and W [K, N]. Pruning keeps the channels `keep` of x.
With calibration statistics of x — the second moment H = E[x xᵀ] (the Gram divided by the row
count) and the mean m = E[x] — two recoveries:

- bias compensation: the removed channels' average contribution moves into the bias,
  b' = b + W[removed]ᵀ · m[removed];
- least-squares refit (feature distillation in closed form): with z = [x_keep, 1], choose
  [W'; δb] minimizing E‖x·W − z·[W'; δb]‖², i.e. solve (E[zzᵀ] + λI) [W'; δb] = E[z xᵀ] W with
  E[zzᵀ] = [[H_kk, m_k], [m_kᵀ, 1]] and E[z xᵀ] = [[H_k:], [mᵀ]]; λ = damp · mean(diag H_kk).
  This is W' = (X_kᵀX_k + λI)⁻¹ X_kᵀ X W with an intercept.

`relative_error` gives E‖x·W − (z·[W'; δb])‖² / E‖x·W‖² from the same statistics, so the report
can show each group's output error before and after recovery without another pass over data.
"""

import numpy as np


def _augmented(second_moment: np.ndarray, mean: np.ndarray, keep: np.ndarray):
    h = np.asarray(second_moment, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    k = len(keep)
    gzz = np.empty((k + 1, k + 1))
    gzz[:k, :k] = h[np.ix_(keep, keep)]
    gzz[:k, k] = gzz[k, :k] = m[keep]
    gzz[k, k] = 1.0
    gzx = np.vstack([h[keep], m[None, :]])
    return gzz, gzx


def bias_compensation(weight_kn: np.ndarray, mean: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """δb [N] = W[removed]ᵀ · m[removed]."""
    removed = np.setdiff1d(np.arange(weight_kn.shape[0]), keep)
    return np.asarray(mean, dtype=np.float64)[removed] @ np.asarray(weight_kn, dtype=np.float64)[removed]


def least_squares(
    weight_kn: np.ndarray, second_moment: np.ndarray, mean: np.ndarray, keep: np.ndarray, damp: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """(W' [len(keep), N], δb [N]) minimizing the consumer's output error on the statistics."""
    w = np.asarray(weight_kn, dtype=np.float64)
    gzz, gzx = _augmented(second_moment, mean, keep)
    k = len(keep)
    lam = damp * max(float(np.mean(np.diag(gzz)[:k])), 1e-12)
    gzz[np.arange(k), np.arange(k)] += lam
    solution = np.linalg.solve(gzz, gzx @ w)
    return solution[:k], solution[k]


def relative_error(
    weight_kn: np.ndarray,
    second_moment: np.ndarray,
    mean: np.ndarray,
    keep: np.ndarray,
    new_weight: np.ndarray,
    delta_bias: np.ndarray,
) -> float:
    """E‖x·W − (x_keep·W' + δb)‖² / E‖x·W‖², from H = E[xxᵀ] and m = E[x]."""
    w = np.asarray(weight_kn, dtype=np.float64)
    h = np.asarray(second_moment, dtype=np.float64)
    gzz, gzx = _augmented(h, mean, keep)
    a = np.vstack([np.asarray(new_weight, dtype=np.float64), np.asarray(delta_bias, dtype=np.float64)[None, :]])
    reference = float(np.einsum("kn,kj,jn->", w, h, w))
    error = reference - 2.0 * float(np.einsum("kn,kj,jn->", a, gzx, w)) + float(np.einsum("kn,kj,jn->", a, gzz, a))
    return max(error, 0.0) / reference if reference > 0 else 0.0
