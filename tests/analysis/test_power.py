"""Sample-size planning: the normal approximation's textbook figure, and planned sizes that
reach the stated power (±5 points) when the study is simulated again with fresh seeds and
analysed with the report's own tests."""

import numpy as np
import pytest

from analysis.power import (
    StudyDesign,
    holm_adjusted,
    power_percent,
    power_statement,
    sample_size,
    sign_test_p,
    simulated_power,
)
from analysis.preference import cluster_test, holm, sign_test


def test_simple_case_is_the_normal_approximation():
    # Two conditions, 60/40, alpha 0.05 two-sided, power 0.8: n ≈ 194 (Lachin 1981's
    # formula for one proportion; RESEARCH.md).
    plan = sample_size(StudyDesign(win_rate=0.6))
    assert (plan["judgments_needed"], plan["items_needed"]) == (194, 194)
    assert plan["method"] == "normal approximation"
    # Ties thin the decisive verdicts; overlap spreads judgments over fewer items.
    plan = sample_size(StudyDesign(win_rate=0.6, tie_rate=0.2, raters_per_pair=3))
    assert plan["items_needed"] == 81 and plan["judgments_needed"] == 243
    assert sample_size(StudyDesign(win_rate=0.4))["items_needed"] == 194  # symmetric


def test_simple_plan_reaches_its_power_in_simulated_studies():
    design = StudyDesign(win_rate=0.6)
    plan = sample_size(design)
    simulated = simulated_power(design, plan["items_needed"], simulations=2000, seed=11)
    # The exact sign test is a little conservative: 0.764 exact, within 5 points of 0.8.
    assert abs(simulated - 0.8) <= 0.05, f"planned {plan}, simulated power {simulated:.3f}"
    assert abs(simulated - plan["power"]) <= 0.03, "the plan's exact power is what happens"


@pytest.mark.parametrize(
    "design",
    [
        StudyDesign(conditions=2, raters_per_pair=3, item_sd=1.0),
        StudyDesign(
            conditions=3,
            raters_per_pair=3,
            item_sd=0.5,
            rater_sd=0.3,
            tie_rate=0.2,
            items_per_rater=60,
        ),
        StudyDesign(conditions=4, design="vs-first", win_rate=0.65, raters_per_pair=2, item_sd=0.8),
    ],
)
def test_clustered_plans_reach_their_power_in_fresh_simulations(design):
    plan = sample_size(design, 0.8, simulations=600, seed=0)
    assert plan["method"].startswith("simulation")
    fresh = simulated_power(design, plan["items_needed"], simulations=600, seed=12345)
    assert abs(fresh - 0.8) <= 0.05, f"planned {plan}, fresh simulated power {fresh:.3f}"
    # Clustering costs judgments: more than independent verdicts would need.
    independent = sample_size(StudyDesign(win_rate=design.win_rate, tie_rate=design.tie_rate))
    assert plan["judgments_needed"] / plan["comparisons"] > independent["judgments_needed"]


def test_cluster_test_keeps_its_level_where_the_sign_test_does_not():
    # No preference, but items differ a lot: the k raters of an item agree with each other.
    design = StudyDesign(win_rate=0.5, raters_per_pair=5, item_sd=2.0)
    cluster = 2 * simulated_power(design, 40, simulations=3000, seed=3, test="cluster")
    sign = 2 * simulated_power(design, 40, simulations=3000, seed=3, test="sign")
    # At most alpha (a little under: the null-centred error is conservative).
    assert 0.02 <= cluster <= 0.065, f"cluster test false-positive rate {cluster:.3f}"
    assert sign > 0.15, f"sign test false-positive rate {sign:.3f} (judgments not independent)"


def test_vectorized_tests_equal_the_reports():
    rng = np.random.default_rng(0)
    for _ in range(20):
        wins, losses = rng.integers(0, 30, size=2)
        expected = sign_test(int(wins), int(losses))
        assert sign_test_p(np.array(wins), np.array(losses)) == pytest.approx(
            np.nan if expected is None else expected, nan_ok=True
        )
    p = rng.random((30, 5))
    p[rng.random(p.shape) < 0.2] = np.nan
    for row, adjusted in zip(p, holm_adjusted(p), strict=True):
        expected = holm([None if np.isnan(v) else float(v) for v in row])
        assert adjusted == pytest.approx(
            [np.nan if v is None else v for v in expected], nan_ok=True
        )


def test_cluster_test_on_small_cases():
    # Two items won outright: as uncertain as a sign test on two verdicts.
    assert cluster_test(np.array([3.0, 3.0]), np.array([3.0, 3.0])) == pytest.approx(0.5)
    assert cluster_test(np.array([1.5, 1.5]), np.array([3.0, 3.0])) == pytest.approx(1.0)
    assert np.isnan(cluster_test(np.array([3.0]), np.array([3.0])))
    mirrored = cluster_test(np.array([3.0, 0.0, 1.0]), np.array([3.0, 3.0, 3.0]))
    assert mirrored == pytest.approx(cluster_test(np.array([0.0, 3.0, 2.0]), np.full(3, 3.0)))


def test_power_statement_reads_as_one_line():
    line = power_statement(StudyDesign(raters_per_pair=3), 40)
    assert line.startswith("40 items × overlap 3 detect a 60/40 preference with ")
    assert line.endswith("80 % needs 65 items.") and " 54 % power" in line  # exact sign test
    enough = power_statement(StudyDesign(raters_per_pair=3), 80)
    assert "needs" not in enough and int(enough.split(" with ")[1].split(" %")[0]) >= 80


@pytest.mark.parametrize(
    ("power", "words"),
    [(0, "<1 %"), (0.003, "<1 %"), (0.005, "1 %"), (0.02, "2 %"), (0.025, "3 %"),
     (0.5, "50 %"), (0.994, "99 %"), (0.999, ">99 %"), (1, ">99 %")],
)
def test_power_percent_never_rounds_to_a_certainty(power, words):
    assert power_percent(power) == words


def test_a_small_studys_power_is_its_rounded_share_not_zero():
    """The demo's shape, 20 items: about 2 % per comparison (a brute-force simulation of
    20 000 such studies gave 1.6 %); 4 items cannot reach significance under Holm."""
    demo = StudyDesign(conditions=5, raters_per_pair=1, design="vs-first")
    assert " with 2 % power per comparison (Holm across 4)" in power_statement(demo, 20)
    assert " with <1 % power per comparison" in power_statement(demo, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conditions": 1}, "--conditions must be 2 or more"),
        ({"win_rate": 1.2}, "--win-rate must be between 0 and 1"),
        ({"design": "round-robin"}, "--design must be one of all-pairs, vs-first"),
    ],
)
def test_bad_designs_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StudyDesign(**kwargs)
    with pytest.raises(ValueError, match="nothing to detect"):
        sample_size(StudyDesign(win_rate=0.5))
