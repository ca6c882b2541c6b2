"""Channel importance for structured pruning, and the global choice of what to remove.

Scores, one per channel of a dependency group (higher = keep):

- `magnitude`: the L2 norm of everything the channel owns in the weights (the producer's output
  row/filter and the consumer's input row), the classic filter criterion;
- `wanda_sp`: Σ_n |W[c, n]| · ‖x_c‖ over the consumer's input row c (Wanda-sp: weight magnitude
  times the RMS of the input channel on calibration data);
- `flap`: Var(x_c) · ‖W[c, :]‖² (FLAP's fluctuation metric: how much the consumer's output moves
  when channel c is replaced by its mean, which bias compensation then adds back);
- `obs`: the order in which greedy structured OBS removes the channels, the rest re-solved by
  least squares after each removal (sees channels that duplicate each other, which the
  per-channel scores above keep or drop together).

A residual stream's channels are owned by many layers (every producer whose output meets at the
residual Adds, every consumer reading the stream): `layer_sum` standardizes each layer's scores
on its own and sums them, so no layer's scale decides for the others (Torch-Pruning's group
importance instead averages the layers' raw |w|² sums, which the largest layer dominates).

`standardize` makes scores comparable across layers ((s − mean) / std per group) and
`select_global` removes the globally lowest standardized channels until the requested number of
parameters is gone, so layers get non-uniform ratios, each group keeping at least `min_keep`
channels and, optionally, a multiple of `multiple` channels.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def magnitude(rows: list[np.ndarray]) -> np.ndarray:
    """L2 norm per channel of weights given channel-first ([C, ...] each), all together."""
    total = sum(np.square(np.asarray(r, dtype=np.float64).reshape(r.shape[0], -1)).sum(axis=1) for r in rows)
    return np.sqrt(total)


def wanda_sp(weight_in: np.ndarray, mean_square: np.ndarray) -> np.ndarray:
    """Σ_n |W[c, n]| · sqrt(E[x_c²]) for a consumer weight [C, N] and its input's E[x²] [C]."""
    w = np.abs(np.asarray(weight_in, dtype=np.float64)).sum(axis=1)
    return w * np.sqrt(np.maximum(mean_square, 0.0))


def flap(weight_in: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Var(x_c) · ‖W[c, :]‖² for a consumer weight [C, N] and its input's variance [C]."""
    w = np.square(np.asarray(weight_in, dtype=np.float64)).sum(axis=1)
    return np.maximum(variance, 0.0) * w


def standardize(scores: np.ndarray) -> np.ndarray:
    """(s − mean) / std within one group (all zeros when the scores are constant)."""
    scores = np.asarray(scores, dtype=np.float64)
    std = scores.std()
    return (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)


def layer_sum(per_layer: list[np.ndarray]) -> np.ndarray:
    """Σ over layers of each layer's standardized channel scores (a residual stream's channels)."""
    return sum(standardize(s) for s in per_layer)


@dataclass(frozen=True)
class Selection:
    keep: list[np.ndarray]  # per group: sorted indices of the kept channels
    removed_params: int
    target_params: int


def max_removable(sizes: list[int], costs: list[int], min_keep: list[int]) -> int:
    """Parameters removed when every group is cut down to its minimum (constant costs)."""
    return int(sum(max(s - m, 0) * c for s, c, m in zip(sizes, costs, min_keep)))


def select_global(
    scores: list[np.ndarray],
    costs: Sequence[int] | Callable[[int], int],
    target_params: int,
    min_keep: list[int],
    multiple: int | Sequence[int] = 1,
    on_remove: Callable[[int], None] | None = None,
) -> Selection:
    """Remove the globally lowest-scored channels until `target_params` parameters are gone.

    `scores[g]` are group g's (standardized) channel scores; `costs` the parameters one of its
    channels owns: a list, or a function of g asked before each removal (then `on_remove(g)` is
    told of it, so costs can follow shapes that shrink). Channels are taken in ascending score
    order (ties: group, then channel index) and skipped once their group is down to
    `min_keep[g]`. With `multiple` > 1 (one for all, or per group) each group's kept count is
    then rounded up to a multiple
    (never above the group's size), keeping its best-scored channels: a few fewer parameters
    than asked may be removed (`removed_params` counts before rounding).
    """
    cost = costs if callable(costs) else costs.__getitem__
    order = sorted((float(s), g, c) for g, group in enumerate(scores) for c, s in enumerate(group))
    remaining = [len(s) for s in scores]
    removed = [np.zeros(len(s), dtype=bool) for s in scores]
    total = 0
    for _, g, c in order:
        if total >= target_params:
            break
        if remaining[g] <= min_keep[g]:
            continue
        removed[g][c] = True
        remaining[g] -= 1
        total += cost(g)
        if on_remove is not None:
            on_remove(g)
    multiples = [multiple] * len(scores) if isinstance(multiple, int) else list(multiple)
    keep = []
    for g, group in enumerate(scores):
        kept = np.flatnonzero(~removed[g])
        if multiples[g] > 1:
            count = min(len(group), -(-len(kept) // multiples[g]) * multiples[g])
            best = np.argsort(-np.asarray(group), kind="stable")[:count]
            kept = np.sort(best)
        keep.append(kept)
    return Selection(keep, int(total), int(target_params))


def obs(
    consumers: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    repeat: int = 1,
    damp: float = 0.01,
    limit: int | None = None,
) -> np.ndarray:
    """Scores from greedy structured OBS (optimal brain surgeon for whole channels, as in ZipLM and
    SlimGPT): the position at which each channel is removed (0 = first, higher = keep).

    `consumers` holds per consumer (W [C·repeat, N], E[xxᵀ], E[x]); channel c owns rows
    c·repeat … c·repeat + repeat − 1. With z = [x, 1] and H = E[zzᵀ] + λI (λ = damp · mean
    diag E[xxᵀ], on the x rows), removing the rows B from the rows still kept, S, with the kept
    rows and a bias re-solved by least squares, raises E‖x·W − z_S·W'‖² + λ‖W' − W_S‖² by
    tr(W_Bᵀ (H⁻¹_BB)⁻¹ W_B) (W the current, already re-solved rows; H⁻¹ over S). The channels with the
    least rise (summed over consumers) go first, a few per step (C/128, at least one); then
    W_S −= H⁻¹_SB (H⁻¹_BB)⁻¹ W_B and H⁻¹ loses B by the same Schur complement. Unlike a per-channel
    score this sees redundancy: of two channels that copy each other, one goes early (the other
    takes its place), neither is kept for its size alone. With `limit`, the greedy stops once that
    many channels are gone (the cost falls with the cube of the rows left); the rest score above
    them, in the order of their last rise.
    """
    count = consumers[0][0].shape[0] // repeat
    states = []
    for weight, second, mean in consumers:
        k = weight.shape[0]
        h = np.empty((k + 1, k + 1))
        h[:k, :k] = second
        h[:k, k] = h[k, :k] = mean
        h[k, k] = 1.0
        h[np.arange(k), np.arange(k)] += damp * max(float(np.mean(np.diag(second))), 1e-12)
        w = np.vstack([np.asarray(weight, dtype=np.float64), np.zeros((1, weight.shape[1]))])
        states.append([np.linalg.inv(h), w])
    alive = np.arange(count)
    scores = np.zeros(count)
    step = max(1, count // 128)
    position = 0
    limit = count if limit is None else min(limit, count)
    while len(alive):
        blocks = np.arange(len(alive))[:, None] * repeat + np.arange(repeat)[None, :]  # local rows
        rise = np.zeros(len(alive))
        for hinv, w in states:
            if repeat == 1:
                rise += np.square(w[:-1]).sum(axis=1) / np.diag(hinv)[:-1]
                continue
            hb = hinv[blocks[:, :, None], blocks[:, None, :]]  # [n, r, r]
            wb = w[blocks]  # [n, r, N]
            rise += np.sum(wb * np.linalg.solve(hb, wb), axis=(1, 2))
        if position >= limit:
            scores[alive] = position + np.argsort(np.argsort(rise, kind="stable"), kind="stable")
            break
        gone = np.argsort(rise, kind="stable")[: min(step, len(alive), limit - position)]
        scores[alive[gone]] = position + np.arange(len(gone))
        position += len(gone)
        b = blocks[gone].reshape(-1)
        s = np.setdiff1d(np.arange(len(alive) * repeat + 1), b)  # the bias row stays
        for state in states:
            hinv, w = state
            hsb = hinv[s][:, b]
            solved = np.linalg.solve(hinv[b][:, b], np.hstack([w[b], hsb.T]))
            state[0] = hinv[s][:, s] - hsb @ solved[:, w.shape[1] :]
            state[1] = w[s] - hsb @ solved[:, : w.shape[1]]
        alive = np.delete(alive, gone)
    return scores
