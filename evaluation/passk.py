"""pass@k: the unbiased estimator of Chen et al. 2021 and its per-condition aggregation.

Plain Python, no Django. For one problem with n samples of which c pass,
pass@k = 1 - C(n-c, k) / C(n, k), computed as a product so that large n never overflows.
A condition's pass@k is the mean over its problems.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PassAtK:
    """pass@k of one condition: the estimate and how much data it rests on."""

    k: int
    pass_at_k: float
    n_problems: int
    n_samples: int
    n_passed: int


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples of which `c` passed (needs n >= k)."""
    if not 0 <= c <= n:
        raise ValueError(f"passed count {c} must lie between 0 and the sample count {n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i)  ==  1 - C(n-c, k) / C(n, k)
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def pass_at_k_over_problems(outcomes: Iterable[tuple[Hashable, bool]], k: int = 1) -> PassAtK:
    """pass@k from (problem id, passed) pairs, one pair per sample: the mean over problems.

    Every problem needs at least k samples; with k = 1 this is the mean per-problem pass rate,
    so problems with more samples do not weigh more.
    """
    per_problem: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for problem, passed in outcomes:
        counts = per_problem[problem]
        counts[0] += 1
        counts[1] += bool(passed)
    if not per_problem:
        raise ValueError("no outcomes to estimate pass@k from")
    estimates = [pass_at_k(n, c, k) for n, c in per_problem.values()]
    return PassAtK(
        k=k,
        pass_at_k=sum(estimates) / len(estimates),
        n_problems=len(per_problem),
        n_samples=sum(n for n, _ in per_problem.values()),
        n_passed=sum(c for _, c in per_problem.values()),
    )


def pass_at_k_by_condition(
    outcomes_by_condition: Mapping[Hashable, Iterable[tuple[Hashable, bool]]], k: int = 1
) -> dict[Hashable, PassAtK]:
    """pass@k for each condition (e.g. each sparsity threshold) from its (problem, passed) pairs."""
    return {
        condition: pass_at_k_over_problems(outcomes, k)
        for condition, outcomes in outcomes_by_condition.items()
    }
