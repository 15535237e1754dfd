"""Adaptive assignment: the rules' arithmetic, and in simulation fewer judgments than
uniform assignment to bring every pair's CI within a target width."""

import numpy as np
import pytest

from analysis.adaptive import (
    choose,
    judgments_to_precision,
    next_condition_pair,
    pair_priorities,
    score_variance,
)


def pair_probabilities(strengths, tie_rate=0.1) -> np.ndarray:
    """(first wins, tie, second wins) of every condition pair under Bradley–Terry."""
    rows = []
    for i in range(len(strengths)):
        for j in range(i + 1, len(strengths)):
            p = 1 / (1 + np.exp(strengths[j] - strengths[i]))
            rows.append([(1 - tie_rate) * p, tie_rate, (1 - tie_rate) * (1 - p)])
    return np.array(rows)


def test_widest_rule_needs_fewer_judgments_than_uniform():
    # Dense and three sparsity levels, the sparsest clearly worse: lopsided pairs settle
    # early, close ones need more judgments.
    probabilities = pair_probabilities([0.0, -1.0, -2.0, -3.0])
    uniform = judgments_to_precision(probabilities, 0.05, rule=None, studies=150, seed=1)
    widest = judgments_to_precision(probabilities, 0.05, rule="widest", studies=150, seed=2)
    arena = judgments_to_precision(probabilities, 0.05, rule="arena", studies=150, seed=3)
    ratio = uniform.mean() / widest.mean()
    assert ratio > 1.25, f"uniform / adaptive judgments {ratio:.2f} (1.41 over 300 studies)"
    assert uniform.mean() / arena.mean() > 1.0, "Arena's rule should not cost judgments"


def test_priorities_follow_the_formulas():
    n, variance = np.array([0, 4, 16]), np.array([0.25, 0.16, 0.25])
    np.testing.assert_allclose(pair_priorities(n, variance), [0.5, 0.2, 0.125])
    np.testing.assert_allclose(
        pair_priorities(n, variance, "arena"),
        [0.5, 0.4 / 2 - 0.4 / np.sqrt(5), 0.5 / 4 - 0.5 / np.sqrt(17)],
    )
    with pytest.raises(ValueError, match="rule must be one of widest, arena"):
        pair_priorities(n, variance, "greedy")


def test_score_variance_is_shrunk_towards_a_quarter():
    # Four identical verdicts: sample variance 0, shrunk by two pseudo-judgments of ¼.
    assert score_variance(4, 4.0, 4.0) == pytest.approx(2 * 0.25 / 6)
    assert score_variance(0, 0.0, 0.0) == pytest.approx(0.25)


def test_next_pair_is_among_the_available_and_prefers_the_unknown():
    rng = np.random.default_rng(0)
    judged = {("a", "b"): [1.0] * 30, ("a", "c"): [1.0, 0.0] * 15}
    available = [("a", "b"), ("a", "c"), ("b", "c")]
    assert next_condition_pair(judged, available, rng) == ("b", "c")  # never judged
    assert next_condition_pair(judged, available[:2], rng) == ("a", "c")  # split verdicts
    picks = [next_condition_pair(judged, available[:2], rng, "arena") for _ in range(300)]
    assert 0.5 < picks.count(("a", "c")) / 300 < 1  # drawn, not always the same
    with pytest.raises(ValueError, match="no condition pair is available"):
        next_condition_pair(judged, [], rng)


def test_choose_breaks_ties_at_random():
    rng = np.random.default_rng(0)
    picks = {int(choose(np.array([0.3, 0.3, 0.1]), "widest", rng)) for _ in range(50)}
    assert picks == {0, 1}
