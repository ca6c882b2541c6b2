"""Recovery after removing input channels of a linear layer, in closed form (no training).

A consumer computes y = x·W + b with x [K] and W [K, N]. Pruning keeps the channels `keep` of x.
With calibration statistics of x — the second moment H = E[x xᵀ] (the Gram divided by the row
count) and the mean m = E[x] — two recoveries:

- bias compensation: the removed channels' average contribution moves into the bias,
  b' = b + W[removed]ᵀ · m[removed];
- sequential statistics (`Moments` with `cross`): x as the partly pruned model computes it and
  x_ref as the unpruned one does, so the refit also makes up for the layers pruned before;
- least-squares refit (feature distillation in closed form): with z = [x_keep, 1], choose
  [W'; δb] minimizing E‖x·W − z·[W'; δb]‖², i.e. solve (E[zzᵀ] + λI) [W'; δb] = E[z xᵀ] W with
  E[zzᵀ] = [[H_kk, m_k], [m_kᵀ, 1]] and E[z xᵀ] = [[H_k:], [mᵀ]]; the damping λ‖W' − W_k‖²
  (λ = damp · mean(diag H_kk)) pulls the solution towards the kept rows as they were rather than
  towards zero, so a refit on few calibration rows cannot do worse than slicing by much. This
  is W' = (X_kᵀX_k + λI)⁻¹ (X_kᵀ X W + λ W_k) with an intercept.

`relative_error` gives E‖x·W − (z·[W'; δb])‖² / E‖x·W‖² from the same statistics, so the report
can show each group's output error before and after recovery without another pass over data.
"""

from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    """Statistics of a consumer's input: x as the model being pruned computes it, x_ref as the
    unpruned model does (one-shot: the same, so `cross`, `ref_second`, `ref_mean` default to x's)."""

    second: np.ndarray  # E[x xᵀ] [K, K]
    mean: np.ndarray  # E[x] [K]
    cross: np.ndarray | None = None  # E[x x_refᵀ] [K, K]
    ref_second: np.ndarray | None = None  # E[x_ref x_refᵀ]
    ref_mean: np.ndarray | None = None  # E[x_ref]

    def __post_init__(self):
        self.second = np.asarray(self.second, dtype=np.float64)
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.cross = self.second if self.cross is None else np.asarray(self.cross, dtype=np.float64)
        self.ref_second = self.second if self.ref_second is None else np.asarray(self.ref_second, dtype=np.float64)
        self.ref_mean = self.mean if self.ref_mean is None else np.asarray(self.ref_mean, dtype=np.float64)


def _augmented(moments: Moments, keep: np.ndarray):
    k = len(keep)
    gzz = np.empty((k + 1, k + 1))
    gzz[:k, :k] = moments.second[np.ix_(keep, keep)]
    gzz[:k, k] = gzz[k, :k] = moments.mean[keep]
    gzz[k, k] = 1.0
    gzx = np.vstack([moments.cross[keep], moments.ref_mean[None, :]])
    return gzz, gzx


def bias_compensation(weight_kn: np.ndarray, moments: Moments, keep: np.ndarray) -> np.ndarray:
    """δb [N] = E[x_ref]·W − E[x_keep]·W_keep (one-shot: W[removed]ᵀ · m[removed])."""
    w = np.asarray(weight_kn, dtype=np.float64)
    return moments.ref_mean @ w - moments.mean[keep] @ w[keep]


def least_squares(
    weight_kn: np.ndarray, moments: Moments, keep: np.ndarray, damp: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """(W' [len(keep), N], δb [N]) minimizing E‖x_ref·W − (x_keep·W' + δb)‖² + λ‖W' − W_keep‖²."""
    w = np.asarray(weight_kn, dtype=np.float64)
    gzz, gzx = _augmented(moments, keep)
    k = len(keep)
    lam = damp * max(float(np.mean(np.diag(gzz)[:k])), 1e-12)
    gzz[np.arange(k), np.arange(k)] += lam
    rhs = gzx @ w
    rhs[:k] += lam * w[np.asarray(keep)]
    solution = np.linalg.solve(gzz, rhs)
    return solution[:k], solution[k]


def relative_error(
    weight_kn: np.ndarray, moments: Moments, keep: np.ndarray, new_weight: np.ndarray, delta_bias: np.ndarray
) -> float:
    """E‖x_ref·W − (x_keep·W' + δb)‖² / E‖x_ref·W‖², from the moments alone."""
    w = np.asarray(weight_kn, dtype=np.float64)
    gzz, gzx = _augmented(moments, keep)
    a = np.vstack([np.asarray(new_weight, dtype=np.float64), np.asarray(delta_bias, dtype=np.float64)[None, :]])
    reference = float(np.sum(w * (moments.ref_second @ w)))  # traces via BLAS products
    error = reference - 2.0 * float(np.sum(a * (gzx @ w))) + float(np.sum(a * (gzz @ a)))
    return max(error, 0.0) / reference if reference > 0 else 0.0
