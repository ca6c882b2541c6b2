"""Choosing one option per unit (a layer or fused group) under a byte or an error budget.

Each unit has options (bytes, predicted error); errors add up over units (the usual first-order
assumption of mixed-precision allocation). `allocate_bytes` minimizes the total error with the
total bytes ≤ budget: a Lagrangian relaxation (each unit takes argmin error + λ·bytes; λ bisected
to the smallest value that fits) followed by a greedy repair that spends what is left of the budget
on the upgrades with the most error saved per byte. `allocate_error` minimizes bytes with the
total error ≤ a bound the same way. `pareto_front` lists the (bytes, error) points the relaxation
reaches over λ: the lower convex hull of the trade-off.
"""

from dataclasses import dataclass

import numpy as np

from onnxcomp.errors import OnnxcompError


@dataclass(frozen=True)
class Option:
    bytes: int
    error: float


def _pick(units: list[list[Option]], lam: float) -> list[int]:
    """Per unit, the option minimizing error + λ·bytes (ties: fewer bytes)."""
    return [min(range(len(opts)), key=lambda i: (opts[i].error + lam * opts[i].bytes, opts[i].bytes)) for opts in units]


def total(units: list[list[Option]], choice: list[int]) -> tuple[int, float]:
    return sum(u[c].bytes for u, c in zip(units, choice)), sum(u[c].error for u, c in zip(units, choice))


def _lambda_range(units: list[list[Option]]) -> float:
    """A λ large enough that every unit takes its smallest option."""
    slopes = [
        (a.error - b.error) / (b.bytes - a.bytes)
        for opts in units
        for a in opts
        for b in opts
        if b.bytes > a.bytes and a.error > b.error
    ]
    return 2.0 * max(slopes, default=1.0) + 1e-30


def _check(units: list[list[Option]]) -> None:
    if not units or any(not opts for opts in units):
        raise OnnxcompError("allocation: every unit needs at least one option")


def allocate_bytes(units: list[list[Option]], budget: int) -> list[int]:
    """The option per unit minimizing total error with total bytes ≤ budget."""
    _check(units)
    smallest = sum(min(o.bytes for o in opts) for opts in units)
    if smallest > budget:
        raise OnnxcompError(f"allocation: {budget} bytes is below the smallest reachable {smallest}")
    lo, hi = 0.0, _lambda_range(units)
    for _ in range(100):  # bisect the smallest λ whose choice fits
        mid = 0.5 * (lo + hi)
        if total(units, _pick(units, mid))[0] <= budget:
            hi = mid
        else:
            lo = mid
    choice = _pick(units, hi)
    used = total(units, choice)[0]
    while True:  # repair: the upgrade with the most error saved per byte that still fits
        best, best_rate = None, 0.0
        for u, opts in enumerate(units):
            current = opts[choice[u]]
            for i, o in enumerate(opts):
                extra = o.bytes - current.bytes
                gain = current.error - o.error
                if gain > 0 and used + extra <= budget:
                    rate = gain / max(extra, 1)
                    if rate > best_rate:
                        best, best_rate = (u, i), rate
        if best is None:
            return choice
        u, i = best
        used += units[u][i].bytes - units[u][choice[u]].bytes
        choice[u] = i


def allocate_error(units: list[list[Option]], max_error: float) -> list[int]:
    """The option per unit minimizing total bytes with total predicted error ≤ max_error."""
    _check(units)
    best_error = sum(min(o.error for o in opts) for opts in units)
    if best_error > max_error:
        raise OnnxcompError(f"allocation: error {max_error:g} is below the smallest reachable {best_error:g}")
    lo, hi = 0.0, _lambda_range(units)
    for _ in range(100):  # bisect the largest λ (fewest bytes) whose error stays within the bound
        mid = 0.5 * (lo + hi)
        if total(units, _pick(units, mid))[1] <= max_error:
            lo = mid
        else:
            hi = mid
    choice = _pick(units, lo)
    err = total(units, choice)[1]
    while True:  # repair: the downgrade saving the most bytes per unit of error that stays within the bound
        best, best_rate = None, 0.0
        for u, opts in enumerate(units):
            current = opts[choice[u]]
            for i, o in enumerate(opts):
                saved = current.bytes - o.bytes
                cost = o.error - current.error
                if saved > 0 and err + cost <= max_error:
                    rate = saved / max(cost, 1e-30)
                    if rate > best_rate:
                        best, best_rate = (u, i), rate
        if best is None:
            return choice
        u, i = best
        err += units[u][i].error - units[u][choice[u]].error
        choice[u] = i


def pareto_front(units: list[list[Option]], points: int = 40) -> list[tuple[int, float]]:
    """(bytes, error) of the relaxation's choices over λ, smallest bytes first, duplicates removed."""
    _check(units)
    top = _lambda_range(units)
    lams = [0.0, *np.geomspace(top * 1e-9, top, points - 1)]
    front = sorted({total(units, _pick(units, float(lam))) for lam in lams})
    return [(int(b), float(e)) for b, e in front]
