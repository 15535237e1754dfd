import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.alignment import (
    NOT_RUN,
    condition_table,
    matched_sparsity,
    mean_interval,
    pareto_front,
    pass_at_1_interval,
    policy_axis,
    quality_measure,
)
from analysis.preference import wilson_interval


def test_policy_axis_per_family():
    assert policy_axis({"kind": "dense"}) == ("dense", 0.0)
    assert policy_axis({"kind": "static", "threshold": 0.05}) == ("static", 0.05)
    assert policy_axis({"kind": "dynamic", "threshold": 0.1, "entropy_scale": 1}) == (
        "dynamic",
        0.1,
    )
    assert policy_axis({"kind": "calibrated", "target_sparsity": 0.5, "thresholds": [1]}) == (
        "calibrated",
        0.5,
    )
    assert policy_axis({"kind": "mystery"}) == ("mystery", None)


def test_condition_table_means_pass_at_1_and_win_rate_against_dense():
    conditions = [
        {"name": "dense", "policy": {"kind": "dense"}},
        {"name": "s", "policy": {"kind": "static", "threshold": 0.1}},
    ]
    generations = pd.DataFrame(
        {
            "condition": ["dense", "dense", "s", "s", "s"],
            "item": ["q1", "q2", "q1", "q1", "q2"],
            "active_fraction": [1.0, 1.0, 0.5, 0.7, 0.6],
            "tokens_per_s": [10, 12, 20, 22, 24],
            "latency_s": [1, 1, 0.5, 0.5, 0.5],
            "peak_rss_bytes": [2**30, 2**30, 2**29, 2**29, 2**29],
            "passed": [True, False, True, False, None],
        }
    )
    # condition_a is "dense" (sorted names): s won 3, dense 1, one tie over 5 judgments
    preference = {
        "pairs": [
            {
                "condition_a": "dense",
                "condition_b": "s",
                "n": 5,
                "wins": 1,
                "ties": 1,
                "losses": 3,
                "win_rate_ties_half": 0.3,
                "win_rate_ties_half_ci_cluster": [0.1, 0.6],
                "win_rate_ties_half_ci_wilson": [0.05, 0.7],
            }
        ],
        "bradley_terry": {"conditions": []},
    }
    dense, sparse = condition_table(conditions, generations, preference)
    assert dense["win_rate_vs_dense"] is None
    assert sparse["sparsity"] == pytest.approx(0.4)
    assert sparse["tokens_per_s"] == pytest.approx(22)
    assert sparse["peak_rss_mib"] == pytest.approx(512)
    assert sparse["pass_at_1"] == pytest.approx(0.5)  # q1: 1 of 2, q2: unchecked
    assert (sparse["n_checked"], sparse["n_passed"]) == (2, 1)
    assert sparse["win_rate_vs_dense"] == pytest.approx(0.7)
    assert sparse["win_rate_vs_dense_ci"] == pytest.approx([0.4, 0.9])


def row(name, family, sparsity, speed, quality):
    return {
        "condition": name,
        "family": family,
        "sparsity": sparsity,
        "tokens_per_s": speed,
        "pass_at_1": quality,
        "bt_rating": None,
        "latency_s": None,
        "peak_rss_mib": None,
    }


def test_matched_sparsity_picks_the_nearest_static():
    rows = [
        row("dense", "dense", 0.0, 10, 0.5),
        row("s1", "static", 0.2, 12, 0.5),
        row("s2", "static", 0.5, 15, 0.4),
        row("d", "dynamic", 0.45, 14, 0.45),
    ]
    (match,) = matched_sparsity(rows, None)
    assert match["static"] == "s2" and match["matched"] is True
    assert match["sparsity_gap"] == pytest.approx(-0.05)
    assert match["pass_at_1_difference"] == pytest.approx(0.05)
    assert match["bt_rating_difference"] is None
    assert match["head_to_head_win_rate"] is None


def test_equal_sparsity_matches_within_a_site_or_says_cross_site():
    rows = [
        row("dense", "dense", 0.0, 10, 0.5),
        {**row("s_in", "static", 0.47, 15, 0.4), "site": "input"},
        {**row("s_h", "static", 0.50, 15, 0.4), "site": "h"},
        {**row("c_in", "calibrated", 0.49, 14, 0.45), "site": "input"},
        {**row("c_gate", "calibrated", 0.48, 14, 0.45), "site": "gate"},
    ]
    same, other = matched_sparsity(rows, None)
    assert same["static"] == "s_in" and not same["cross_site"], "its own site, not the nearest"
    assert other["static"] == "s_in" and other["cross_site"] is True
    assert (other["site"], other["static_site"]) == ("gate", "input")


def test_at_equal_sparsity_only_within_the_tolerance():
    rows = [
        row("dense", "dense", 0.0, 10, 0.5),
        row("s", "static", 0.382, 15, 0.4),
        row("d", "dynamic", 0.584, 14, 0.45),
    ]
    (far,) = matched_sparsity(rows, None)
    assert far["matched"] is False and far["static"] == "s", "0.584 is not 0.382"
    assert far["pass_at_1_difference"] is None and far["head_to_head_win_rate"] is None
    (near,) = matched_sparsity(rows, None, tolerance=0.25)
    assert near["matched"] is True and near["pass_at_1_difference"] == pytest.approx(0.05)


def test_every_point_has_a_95_percent_interval_and_a_series_by_site():
    conditions = [
        {"name": "dense", "policy": {"kind": "dense"}},
        {"name": "in", "policy": {"kind": "static", "threshold": 0.1, "site": "input"},
         "summary": "static t=0.1 @input", "skips_bytes": True},
    ]
    generations = pd.DataFrame({
        "condition": ["dense"] * 3 + ["in"] * 3,
        "item": ["q1", "q2", "q3"] * 2,
        "active_fraction": [1.0, 1.0, 1.0, 0.5, 0.6, 0.7],
        "tokens_per_s": [10, 11, 12, 20, 20, 20],
        "latency_s": [1, 1, 1, 0.5, 0.5, 0.5],
        "peak_rss_bytes": [2**30] * 6,
        "weight_bytes_read_per_token": [100, 100, 100, 40, 50, 60],
        "passed": [True, True, False, True, False, False],
    })
    dense, sparse = condition_table(conditions, generations, None)
    assert sparse["series"] == "static @input" and dense["series"] == "dense"
    assert sparse["summary"] == "static t=0.1 @input" and sparse["skips_bytes"] is True
    assert sparse["sparsity"] == pytest.approx(0.4)
    low, high = sparse["sparsity_ci"]
    t_975 = stats.t.ppf(0.975, 2)  # three outputs: 4.30, not the normal 1.96
    assert low < 0.4 < high and high - low == pytest.approx(2 * t_975 * 0.1 / 3**0.5, rel=1e-3)
    assert dense["tokens_per_s_ci"][0] < 11 < dense["tokens_per_s_ci"][1]
    assert sparse["tokens_per_s_ci"] is None, "no spread: no interval, not a certain one"
    assert sparse["bytes_read_per_token"] == pytest.approx(50)
    assert sparse["pass_at_1_ci"][0] < 1 / 3 < sparse["pass_at_1_ci"][1]
    assert dense["peak_rss_mib_ci"] is None
    speed = sparse["tokens_per_s_vs_dense"]
    assert speed["estimate"] == pytest.approx((20**3 / (10 * 11 * 12)) ** (1 / 3))
    assert speed["ci"][0] < speed["estimate"] < speed["ci"][1] and speed["n_pairs"] == 3
    versus = sparse["pass_at_1_vs_dense"]
    assert (versus["right_to_wrong"], versus["wrong_to_right"]) == (1, 0)
    assert versus["difference"] == pytest.approx(-1 / 3) and versus["test"] == "McNemar exact"
    assert sparse["peak_rss_mib_vs_dense"]["estimate"] == 0 and dense["pass_at_1_vs_dense"] is None


def test_pareto_front_keeps_the_undominated():
    rows = [
        row("a", "dense", 0, 10, 0.6),
        row("b", "static", 0.3, 15, 0.6),
        row("c", "static", 0.5, 20, 0.4),
        row("d", "static", 0.6, 18, 0.3),
        row("e", "static", 0.6, 5, None),
    ]
    assert pareto_front(rows, "pass_at_1") == ["b", "c"]
    assert quality_measure(rows) is None  # e has no Pass@1 and nobody a BT rating
    assert quality_measure(rows[:4]) == "pass_at_1"


def test_the_pareto_front_needs_a_quality_measure_that_moves():
    # Pass@1 0 everywhere (no condition wrote code) would put the fastest on the front.
    rows = [row("a", "dense", 0, 10, 0.0), row("b", "static", 0.5, 20, 0.0)]
    assert quality_measure(rows) is None
    rows[0]["bt_rating"], rows[1]["bt_rating"] = 1040.0, 960.0
    assert quality_measure(rows) == "bt_rating"
    rows[1]["bt_rating"] = 1040.0
    assert quality_measure(rows) is None


def test_pass_at_1_carries_its_interval_pass_at_k_and_failures_by_kind():
    conditions = [{"name": "dense", "policy": {"kind": "dense"}}]
    generations = pd.DataFrame(
        {
            "condition": ["dense"] * 6,
            "item": ["q1", "q1", "q2", "q2", "q3", "q3"],
            "active_fraction": [1.0] * 6,
            "tokens_per_s": [10] * 6,
            "latency_s": [1] * 6,
            "peak_rss_bytes": [2**30] * 6,
            "passed": [True, False, False, False, True, True],
            "outcome": [
                "passed", "wrong answer", "timeout", "no code", "passed", "passed",
            ],
        }
    )  # fmt: skip
    (row,) = condition_table(conditions, generations, None)
    assert row["pass_at_1"] == pytest.approx((0.5 + 0 + 1) / 3)
    # Two samples per problem: the interval is over the problems, wider than the Wilson
    # interval of the six samples ([0.19, 0.81]) as if they were independent.
    assert row["pass_at_1_ci"] == pass_at_1_interval(
        generations["item"], generations["passed"]
    )
    low, high = row["pass_at_1_ci"]
    assert low < 0.1876 and high > 0.8124
    # two samples per problem: pass@2 = mean(1 - C(n-c,2)/C(n,2)) = (1 + 0 + 1) / 3
    assert (row["k"], row["pass_at_k"]) == (2, pytest.approx(2 / 3))
    assert row["outcomes"] == {"wrong answer": 1, "timeout": 1, "no code": 1}


def test_one_sample_per_problem_has_no_pass_at_k_and_an_all_zero_row_says_why():
    conditions = [{"name": "dense", "policy": {"kind": "dense"}}]
    generations = pd.DataFrame(
        {
            "condition": ["dense"] * 2, "item": ["q1", "q2"], "active_fraction": [1.0] * 2,
            "tokens_per_s": [10] * 2, "latency_s": [1] * 2, "peak_rss_bytes": [1] * 2,
            "passed": [False, False], "outcome": ["name error", "name error"],
        }
    )  # fmt: skip
    (row,) = condition_table(conditions, generations, None)
    assert row["pass_at_1"] == 0 and row["pass_at_1_ci"][0] == 0 and row["pass_at_1_ci"][1] > 0.5
    assert row["k"] is None and row["pass_at_k"] is None
    assert row["outcomes"] == {"name error": 2}


def test_checks_that_never_ran_are_left_out_of_pass_at_1_and_counted():
    conditions = [{"name": "dense", "policy": {"kind": "dense"}}]
    generations = pd.DataFrame(
        {
            "condition": ["dense"] * 3, "item": ["q1", "q2", "q3"], "active_fraction": [1.0] * 3,
            "tokens_per_s": [10] * 3, "latency_s": [1] * 3, "peak_rss_bytes": [1] * 3,
            "passed": [True, False, None], "outcome": ["passed", "wrong answer", NOT_RUN],
        }
    )  # fmt: skip
    (row,) = condition_table(conditions, generations, None)
    assert (row["pass_at_1"], row["n_checked"], row["n_passed"]) == (0.5, 2, 1)
    assert row["outcomes"] == {"wrong answer": 1, NOT_RUN: 1}
    only_lost = generations.assign(passed=None, outcome=NOT_RUN)
    (row,) = condition_table(conditions, only_lost, None)
    assert row["pass_at_1"] is None and row["outcomes"] == {NOT_RUN: 3}


def test_telemetry_intervals_stay_inside_the_values_possible_range():
    # Seen on a real study: four latencies, one slow, gave "5.17 [-0.55, 10.88]" s.
    conditions = [{"name": "s", "policy": {"kind": "static", "threshold": 0.1}}]
    generations = pd.DataFrame(
        {
            "condition": ["s"] * 4,
            "item": ["q1", "q2", "q3", "q4"],
            "active_fraction": [0.2, 0.99, 0.99, 0.99],
            "tokens_per_s": [30.0, 30.0, 30.0, 20.0],
            "latency_s": [2.0, 2.0, 2.0, 14.7],
            "peak_rss_bytes": [2**30] * 4,
            "passed": [None] * 4,
        }
    )
    (row,) = condition_table(conditions, generations, None)
    assert row["latency_s"] == pytest.approx(5.175)
    assert row["latency_s_ci"][0] == 0.0 and row["latency_s_ci"][1] > 10
    assert row["tokens_per_s_ci"][0] > 0  # inside the range: untouched
    assert row["active_fraction_ci"][1] == 1.0 and row["sparsity_ci"][0] == 0.0


def _width(interval: list[float]) -> float:
    return interval[1] - interval[0]


TASKS = [f"t{i}" for i in range(10)]


def test_several_samples_per_problem_widen_the_pass_at_1_interval_to_the_problems():
    """10 problems × 5 samples, each problem passed by all its samples or by none: 50
    samples, but only 10 independent results. The interval is about as wide as the Wilson
    interval of 10, not that of 50."""
    for n_passing in (3, 5, 7):
        items = [task for task in TASKS for _ in range(5)]
        passed = [int(task[1:]) < n_passing for task in items]
        interval = pass_at_1_interval(items, passed)
        over_problems = wilson_interval(n_passing, 10)
        over_samples = wilson_interval(5 * n_passing, 50)
        assert interval[0] <= n_passing / 10 <= interval[1]
        assert _width(interval) == pytest.approx(_width(over_problems), abs=0.12), interval
        assert _width(interval) > 1.8 * _width(over_samples), interval
    everything = pass_at_1_interval([t for t in TASKS for _ in range(5)], [True] * 50)
    assert everything == wilson_interval(10, 10), "no width to bootstrap: Wilson over problems"


def test_independent_samples_keep_a_narrow_pass_at_1_interval():
    """Problems of equal difficulty (2 or 3 of 5 samples pass each): the spread between
    problems is small, and so is the interval, narrower than 10 all-or-nothing results."""
    items = [task for task in TASKS for _ in range(5)]
    passed = [j < 2 + i % 2 for i in range(10) for j in range(5)]
    interval = pass_at_1_interval(items, passed)
    assert interval[0] < 0.5 < interval[1]
    assert _width(interval) < 0.5 * _width(wilson_interval(5, 10))


def test_one_sample_per_problem_keeps_the_wilson_interval():
    passed = [True, False, True, True, False, False, True, False, False, False]
    assert pass_at_1_interval(TASKS, passed) == wilson_interval(4, 10)
    assert pass_at_1_interval([], []) is None


def test_a_telemetry_mean_interval_is_students_t_and_covers_with_few_outputs():
    values = pd.Series([40.0, 63.5, 87.0])
    mean, ci = mean_interval(values)
    low, high = stats.t.interval(0.95, 2, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(63.5)
    assert ci == pytest.approx([max(low, 0.0), high]), "not the t interval scipy gives"
    # Three outputs a condition: the interval covers the true mean 95 % of the time (the
    # normal 1.96 interval covered ~80 %).
    rng = np.random.default_rng(0)
    draws = rng.normal(50.0, 10.0, size=(4000, 3))
    covered = 0
    for row in draws:
        _, (lo, hi) = mean_interval(pd.Series(row))
        covered += lo <= 50.0 <= hi
    assert 0.935 <= covered / len(draws) <= 0.965, f"coverage {covered / len(draws):.3f}"
