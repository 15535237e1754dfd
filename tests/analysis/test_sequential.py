"""The always-valid confidence sequence: with no preference and a look after every item,
false positives stay under alpha (a naive z test at every look does not); a real
preference is found and stopped on; the vectorized formula equals a step-by-step one."""

import math

import numpy as np
import pytest

from analysis.sequential import confidence_sequence, running_intervals, stopped_early


def item_means(studies: int, items: int, *, log_odds: float, seed: int) -> np.ndarray:
    """Three raters per item, items differing (log-odds SD 1), 10 % ties."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(log_odds, 1.0, (studies, items, 1))))
    won = (rng.random((studies, items, 3)) < p).astype(float)
    return np.where(rng.random((studies, items, 3)) < 0.1, 0.5, won).mean(axis=2)


def test_false_positives_stay_under_alpha_with_a_look_after_every_item():
    means = item_means(1000, 200, log_odds=0.0, seed=0)
    rate = stopped_early(means, alpha=0.05).mean()
    assert rate <= 0.05, f"confidence sequence stopped {rate:.1%} of null studies"
    # The same studies tested by a z test at every look from item 10 on: peeking inflates.
    n = np.arange(1, 201)
    mean = means.cumsum(axis=1) / n
    sd = np.sqrt(
        np.maximum((means**2).cumsum(axis=1) / n - mean**2, 1e-12) * n / (n - 1 + (n == 1))
    )
    peeking = (np.abs((mean - 0.5) / (sd / np.sqrt(n)))[:, 9:] > 1.96).any(axis=1).mean()
    assert peeking > 0.2, f"naive peeking false-positive rate {peeking:.1%}"


def test_a_real_preference_is_found_and_covered():
    means = item_means(500, 200, log_odds=math.log(0.65 / 0.35), seed=1)
    assert stopped_early(means).mean() > 0.6
    centre, width = running_intervals(means)
    truth = item_means(1, 200_000, log_odds=math.log(0.65 / 0.35), seed=2).mean()
    missed = ((centre - width > truth) | (centre + width < truth)).any(axis=1).mean()
    assert missed <= 0.05, f"the sequence missed the true win rate in {missed:.1%} of studies"


def test_vectorized_formula_equals_the_step_by_step_one():
    x = item_means(1, 30, log_odds=0.3, seed=3)[0]
    alpha, mean, variance = 0.05, 0.5, 0.25
    bets = weighted = penalty = 0.0
    for t, value in enumerate(x, start=1):
        bet = min(math.sqrt(2 * math.log(2 / alpha) / (variance * t * math.log(1 + t))), 0.5)
        penalty += 4 * (value - mean) ** 2 * (-math.log(1 - bet) - bet) / 4
        bets, weighted = bets + bet, weighted + bet * value
        mean = (0.5 + x[:t].sum()) / (t + 1)
        variance = (
            0.25 + sum((x[i] - (0.5 + x[: i + 1].sum()) / (i + 2)) ** 2 for i in range(t))
        ) / (t + 1)
    centre, width = running_intervals(x)
    assert centre[-1] == pytest.approx(weighted / bets)
    assert width[-1] == pytest.approx((math.log(2 / alpha) + penalty) / bets)


def test_confidence_sequence_now():
    result = confidence_sequence(np.full(60, 0.9))
    assert result["stop"] and result["ci"][0] > 0.5 and result["n_items"] == 60
    assert confidence_sequence(np.array([]))["ci"] is None
    assert not confidence_sequence(np.array([1.0, 0.0] * 10))["stop"]
