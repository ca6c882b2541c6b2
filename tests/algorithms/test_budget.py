import itertools

import numpy as np
import pytest

from onnxcomp.algorithms.budget import Option, allocate_bytes, allocate_error, pareto_front, total
from onnxcomp.errors import OnnxcompError


def _random_units(seed: int, count: int = 6) -> list[list[Option]]:
    rng = np.random.default_rng(seed)
    units = []
    for _ in range(count):
        sizes = np.sort(rng.integers(10, 200, size=4))
        errors = np.sort(rng.random(4) * rng.choice([0.01, 1.0, 100.0]))[::-1]  # bigger option, smaller error
        units.append([Option(int(b), float(e)) for b, e in zip(sizes, errors)])
    return units


def _exhaustive(units, fits):
    best = None
    for choice in itertools.product(*(range(len(u)) for u in units)):
        b, e = total(units, list(choice))
        if fits(b, e) and (best is None or (e, b) < best[0]):
            best = ((e, b), choice)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_byte_budget_is_respected_and_close_to_the_exhaustive_optimum(seed):
    units = _random_units(seed)
    smallest = sum(u[0].bytes for u in units)
    largest = sum(u[-1].bytes for u in units)
    budget = (smallest + largest) // 2
    choice = allocate_bytes(units, budget)
    used, err = total(units, choice)
    assert used <= budget
    (best_err, _), _ = _exhaustive(units, lambda b, e: b <= budget)
    assert err <= best_err * 1.25 + 1e-12  # Lagrangian + repair: near the optimum on small cases


def test_byte_budget_spends_what_is_left():
    units = [[Option(10, 1.0), Option(20, 0.5)], [Option(10, 4.0), Option(30, 0.0)]]
    assert allocate_bytes(units, 40) == [0, 1]  # 10 + 30: the big saving first
    assert allocate_bytes(units, 30) == [1, 0]
    assert allocate_bytes(units, 20) == [0, 0]


def test_budget_below_the_smallest_reachable_names_the_minimum():
    units = [[Option(10, 1.0), Option(20, 0.5)]]
    with pytest.raises(OnnxcompError, match="smallest reachable 10"):
        allocate_bytes(units, 9)


@pytest.mark.parametrize("seed", range(4))
def test_error_budget_minimizes_bytes(seed):
    units = _random_units(seed, 5)
    bound = 0.5 * (sum(u[0].error for u in units) + sum(u[-1].error for u in units))
    choice = allocate_error(units, bound)
    used, err = total(units, choice)
    assert err <= bound
    best = min(
        total(units, list(c))[0]
        for c in itertools.product(*(range(len(u)) for u in units))
        if total(units, list(c))[1] <= bound
    )
    assert used <= best * 1.25


def test_pareto_front_is_monotone():
    front = pareto_front(_random_units(3))
    sizes = [b for b, _ in front]
    errors = [e for _, e in front]
    assert sizes == sorted(sizes) and len(front) >= 2
    assert all(a >= b for a, b in zip(errors, errors[1:]))
