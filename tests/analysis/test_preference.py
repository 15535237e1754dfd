import json
import math

import choix
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.contracts import InputError, canonical_judgments, validate_judgments
from analysis.preference import (
    arena_ranks,
    bradley_terry,
    bt_table,
    cluster_interval,
    cluster_test,
    elo_ratings,
    holm,
    item_bootstrap_counts,
    oriented_pairs,
    pair_table,
    position_bias,
    preference_summary,
    sign_test,
    wilson_interval,
    win_contributions,
)

COLUMNS = ["item", "rater", "condition_a", "condition_b", "winner"]


def judgments(rows, columns=COLUMNS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def simulate(strengths: dict[str, float], n_items: int, seed: int) -> pd.DataFrame:
    """Three raters per item, each judging a random pair under Bradley–Terry, 10 % ties."""
    rng = np.random.default_rng(seed)
    names = list(strengths)
    rows = []
    for item in range(n_items):
        for rater in range(3):
            i, j = rng.choice(len(names), size=2, replace=False)
            a, b = names[i], names[j]
            p_a = 1 / (1 + math.exp(strengths[b] - strengths[a]))
            if rng.random() < 0.1:
                winner = "tie"
            else:
                winner = "a" if rng.random() < p_a else "b"
            side = "left" if rng.random() < 0.5 else "right"
            rows.append((f"q{item}", f"r{rater}", a, b, winner, side))
    return judgments(rows, [*COLUMNS, "side_a"])


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score).
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_reproduces_newcombe_1998(successes, n, low, high):
    ci = wilson_interval(successes, n)
    assert round(ci[0], 4) == low
    assert round(ci[1], 4) == high


def test_wilson_interval_of_nothing_is_none():
    assert wilson_interval(0, 0) is None


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 13, 20, 50, 100])
def test_wilson_interval_reaches_the_bounds_exactly_at_none_and_all(n):
    """statsmodels' bounds carry rounding: 0 of 3 gave a low of 5.6e-17 and 10 of 10 a high
    of 0.9999999999999999, below its own estimate of 1, in summary.json."""
    assert wilson_interval(0, n)[0] == 0.0
    assert wilson_interval(n, n)[1] == 1.0


def test_sign_test_is_exact_binomial():
    assert sign_test(9, 1) == pytest.approx(22 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2^10
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert sign_test(0, 0) is None


def test_holm_adjusts_only_real_tests():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert holm([None]) == [None]


def test_holm_is_statsmodels_holm():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 12):
        p = rng.uniform(0, 0.2, size)
        p[: size // 2] = p[0]  # ties
        assert holm(list(p)) == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_pairs_are_canonical_with_counts_and_win_rates():
    data = judgments(
        [
            ("q1", "ann", "t0", "t50", "a"),
            ("q2", "ann", "t50", "t0", "b"),  # t0 wins, stored the other way round
            ("q3", "ann", "t0", "t50", "a"),
            ("q1", "bob", "t50", "t0", "tie"),
            ("q2", "bob", "t0", "t50", "tie"),
            ("q3", "bob", "t50", "t0", "a"),  # t50 wins
        ]
    )
    summary = preference_summary(data, bootstrap=200)
    (pair,) = summary["pairs"]
    assert (pair["condition_a"], pair["condition_b"]) == ("t0", "t50")
    assert (pair["wins"], pair["ties"], pair["losses"], pair["n"]) == (3, 2, 1, 6)
    assert pair["n_items"] == 3
    assert pair["win_rate_ties_half"] == pytest.approx(4 / 6)
    assert pair["win_rate_ties_excluded"] == pytest.approx(3 / 4)
    assert pair["win_rate_ties_half_ci_wilson"] == pytest.approx(wilson_interval(4, 6))
    assert pair["win_rate_ties_excluded_ci_wilson"] == pytest.approx(wilson_interval(3, 4))
    assert pair["p_sign_test"] == pytest.approx(0.625)  # 2 * P(X <= 1), X ~ Bin(4, .5)
    assert pair["p_holm"] == pytest.approx(0.625)
    low, high = pair["win_rate_ties_half_ci_cluster"]
    assert 0 <= low <= 4 / 6 <= high <= 1
    assert summary["conditions"] == ["t0", "t50"]
    assert (summary["n_judgments"], summary["n_items"], summary["n_raters"]) == (6, 3, 2)


def test_canonical_judgments_flip_winner_and_side():
    data = judgments(
        [("q1", "ann", "t50", "t0", "a", "left"), ("q1", "bob", "t0", "t50", "b", "")],
        [*COLUMNS, "side_a"],
    )
    out = canonical_judgments(validate_judgments(data))
    assert list(out["condition_a"]) == ["t0", "t0"]
    assert list(out["winner"]) == ["b", "b"]
    assert out["side_a"].iloc[0] == "right"
    assert pd.isna(out["side_a"].iloc[1])
    in_study_order = canonical_judgments(validate_judgments(data), order=["t50", "t0"])
    assert list(in_study_order["condition_a"]) == ["t50", "t50"]


def test_bradley_terry_half_tie_weights_give_the_mle():
    # a beats b 2 times, 2 ties: weighted wins 3 : 1, so P(a beats b) = 3/4 and the
    # log-strength gap is ln 3.
    data = judgments(
        [("q1", "r", "a", "b", "a"), ("q2", "r", "a", "b", "a")]
        + [("q3", "r", "a", "b", "tie"), ("q4", "r", "a", "b", "tie")]
    )
    wins = win_contributions(canonical_judgments(validate_judgments(data)), {"a": 0, "b": 1})
    np.testing.assert_allclose(wins.sum(axis=0), [[0, 3], [1, 0]])
    strengths = bradley_terry(wins.sum(axis=0), alpha=0.0)
    assert strengths[0] - strengths[1] == pytest.approx(math.log(3), abs=1e-6)
    assert strengths.sum() == pytest.approx(0.0, abs=1e-9)


def test_bradley_terry_equals_choix_ilsr_pairwise_on_doubled_unweighted_data():
    # With no weights in choix.ilsr_pairwise, a tie can be one win each way if every
    # decisive judgment is counted twice; with alpha doubled that is the same chain.
    wins = np.array([[0, 3.5, 1], [2, 0, 0.5], [1.5, 4, 0]])
    pairs = [(i, j) for i in range(3) for j in range(3) for _ in range(int(2 * wins[i, j]))]
    expected = choix.ilsr_pairwise(3, pairs, alpha=0.02, max_iter=1000)
    np.testing.assert_allclose(bradley_terry(wins, alpha=0.01), expected - expected.mean())


def test_bradley_terry_recovers_the_order_of_simulated_strengths():
    truth = {"t0": 1.0, "t30": 0.5, "t50": 0.0, "t70": -0.7, "t90": -1.5}
    summary = preference_summary(simulate(truth, n_items=400, seed=3), bootstrap=200, seed=1)
    table = summary["bradley_terry"]["conditions"]
    assert [row["condition"] for row in table] == list(truth)
    assert [row["rank"] for row in table] == [1, 2, 3, 4, 5]
    for row in table:
        centred_truth = truth[row["condition"]] - np.mean(list(truth.values()))
        assert row["log_strength"] == pytest.approx(centred_truth, abs=0.25)
        low, high = row["rating_ci"]
        assert low < row["rating"] < high
    gap = table[0]["rating"] - table[1]["rating"]
    log_gap = table[0]["log_strength"] - table[1]["log_strength"]
    assert gap == pytest.approx(400 * log_gap / math.log(10))


def test_bootstrap_is_seeded():
    data = simulate({"x": 0.3, "y": 0.0, "z": -0.3}, n_items=60, seed=5)
    first = preference_summary(data, bootstrap=100, seed=11)
    again = preference_summary(data, bootstrap=100, seed=11)
    other = preference_summary(data, bootstrap=100, seed=12)
    assert first == again
    assert first["ties_model"] != other["ties_model"]
    assert first["bradley_terry"] == other["bradley_terry"], "the sandwich resamples nothing"


def test_item_bootstrap_counts_draw_every_item_slot_once():
    counts = item_bootstrap_counts(n_items=7, n=50, seed=0)
    assert counts.shape == (50, 7)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(50, 7))
    np.testing.assert_array_equal(counts, item_bootstrap_counts(n_items=7, n=50, seed=0))
    assert not np.array_equal(counts, item_bootstrap_counts(n_items=7, n=50, seed=1))


def test_no_bootstrap_gives_no_bootstrap_cis():
    data = simulate({"x": 0.3, "y": 0.0, "z": -0.3}, n_items=30, seed=5)
    summary = preference_summary(data, bootstrap=0)
    assert all(row["rating_ci"] is None for row in summary["ties_model"]["conditions"])
    # Bradley–Terry's intervals are the sandwich's: no resampling either.
    assert all(row["rating_ci"] for row in summary["bradley_terry"]["conditions"])
    # The win rate's intervals resample nothing.
    assert all(pair["win_rate_ties_half_ci_wilson"] for pair in summary["pairs"])
    assert all(pair["win_rate_ties_half_ci_cluster"] for pair in summary["pairs"])
    json.dumps(summary)  # plain Python types only, so the CLI's --json never fails


def test_win_rate_interval_counts_items_not_judgments():
    # Ten raters agree on each of two items: taken as 20 judgments the interval would be
    # narrow; as two items' evidence (t with 1 degree of freedom) it is everything.
    rows = [
        (f"q{i}", f"r{r}", "t0", "t50", "a" if i == 0 else "b") for i in range(2) for r in range(10)
    ]
    (pair,) = pair_table(judgments(rows))
    assert pair["win_rate_ties_half_ci_cluster"] == [0.0, 1.0]


def test_win_rate_interval_is_the_two_way_cluster_robust_one():
    # Cameron, Gelbach & Miller (2011), written out per judgment: V = V_items + V_raters −
    # V_cells, each Σ_g (Σ_{k in g} e_k)² · G/(G − 1) / N², e_k = score − estimate.
    rng = np.random.default_rng(4)
    rows = [(f"q{i}", f"r{r}", "x", "y", rng.choice(["a", "b", "tie"], p=[0.5, 0.3, 0.2]))
            for i in range(9) for r in range(4) if rng.random() < 0.8]
    data = judgments(rows)
    (pair,) = pair_table(data)
    score = data["winner"].map({"a": 1.0, "tie": 0.5, "b": 0.0})
    residual = score - score.mean()

    def part(keys):
        sums = residual.groupby(keys).sum()
        return len(sums) / (len(sums) - 1) * (sums**2).sum() / len(data) ** 2

    items = data["item"].nunique()
    variance = part(data["item"]) + max(
        0.0, part(data["rater"]) - part(data["item"] + "/" + data["rater"]))
    half = stats.t.ppf(0.975, items - 1) * math.sqrt(variance)
    assert pair["win_rate_ties_half_ci_cluster"] == pytest.approx(
        [score.mean() - half, score.mean() + half])
    assert pair["n_raters"] == 4


def test_one_rater_against_two_on_every_item_is_three_raters_evidence():
    # On each of 10 items r1 and r2 prefer x and r3 prefers y. Items alone see ten items
    # agreeing (p about 0.015); the verdicts are three raters' leanings.
    rows = [(f"q{i}", rater, "x", "y", "b" if rater == "r3" else "a")
            for i in range(10) for rater in ("r1", "r2", "r3")]
    (pair,) = pair_table(judgments(rows))
    scores, counts = np.full(10, 2.0), np.full(10, 3.0)
    assert cluster_test(scores, counts) < 0.02  # items only
    assert pair["p_cluster"] > 0.3
    low, high = pair["win_rate_ties_half_ci_cluster"]
    assert low < 0.5 < 2 / 3 < high


def test_all_ties_give_no_interval_with_the_reason():
    rows = [(f"q{i}", f"r{r}", "x", "y", "tie") for i in range(6) for r in range(2)]
    (pair,) = pair_table(judgments(rows))
    assert pair["win_rate_ties_half_ci_cluster"] is None
    assert pair["win_rate_ties_half_ci_note"] == "none: every item's verdicts gave the same rate"
    assert pair["p_cluster"] == pytest.approx(1.0)


def _leaning_raters(rng, studies: int, gap: float, rater_sd: float, items: int = 20,
                    raters: int = 3):
    """Scores [studies, items, raters] of a design like `analysis.simulate`'s: item
    log-odds SD 0.5, a lean per rater, 20 % ties."""
    logit = (gap + rng.normal(0, 0.5, (studies, items, 1))
             + rng.normal(0, rater_sd, (studies, 1, raters)))
    won = rng.random(logit.shape) < 1 / (1 + np.exp(-logit))
    return np.where(rng.random(logit.shape) < 0.2, 0.5, won.astype(float))


def _clusters(scores):
    counts = np.ones_like(scores)
    cells = (scores.reshape(len(scores), -1), counts.reshape(len(scores), -1))
    return {"raters": (scores.sum(axis=1), counts.sum(axis=1)), "cells": cells}


def test_cluster_test_keeps_its_level_when_raters_lean():
    rng = np.random.default_rng(0)
    scores = _leaning_raters(rng, 3000, 0.0, rater_sd=0.5)
    per_item, counts = scores.sum(axis=2), np.full(scores.shape[:2], 3.0)
    two_way = (cluster_test(per_item, counts, **_clusters(scores)) < 0.05).mean()
    items_only = (cluster_test(per_item, counts) < 0.05).mean()
    assert two_way <= 0.06, f"false-positive rate {two_way:.3f}"
    assert items_only > two_way + 0.02, f"items only {items_only:.3f}, two-way {two_way:.3f}"


def test_win_rate_interval_covers_when_raters_lean():
    rng = np.random.default_rng(1)
    truth = _leaning_raters(rng, 4000, 0.6, 0.3).mean()  # the expected score, by Monte Carlo
    scores = _leaning_raters(rng, 400, 0.6, 0.3)
    covered = items_only = 0
    for study in scores:
        clusters = _clusters(study[None])
        interval = cluster_interval(
            study.sum(axis=1), np.full(20, 3.0),
            raters=tuple(x[0] for x in clusters["raters"]),
            cells=tuple(x[0] for x in clusters["cells"]))
        covered += interval[0] <= truth <= interval[1]
        interval = cluster_interval(study.sum(axis=1), np.full(20, 3.0))
        items_only += interval[0] <= truth <= interval[1]
    assert 0.93 <= covered / 400 <= 0.98, f"covered {covered / 400:.3f}"
    assert items_only < covered, "the raters' share made no difference"


def test_bt_sandwich_of_two_conditions_is_the_win_rates_interval_by_the_delta_method():
    # Two conditions: BT is saturated, θ_x − θ_y = logit(win rate), so the sandwich's
    # variance is the win rate's two-way cluster-robust one over (p(1 − p))², and each
    # centred strength carries half of it.
    rng = np.random.default_rng(6)
    rows = [(f"q{i}", f"r{r}", "x", "y", rng.choice(["a", "b", "tie"], p=[0.5, 0.3, 0.2]))
            for i in range(12) for r in range(3)]
    (pair,) = pair_table(judgments(rows))
    rate = pair["win_rate_ties_half"]
    low, high = pair["win_rate_ties_half_ci_cluster"]
    expected = (high - low) / 2 / (rate * (1 - rate)) / 2 * 400 / math.log(10)
    table = {r["condition"]: r for r in bt_table(judgments(rows), bt_alpha=1e-6)["conditions"]}
    for name in ("x", "y"):
        ci = table[name]["rating_ci"]
        assert (ci[1] - ci[0]) / 2 == pytest.approx(expected, rel=1e-3)
    assert table["x"]["rating"] - table["y"]["rating"] == pytest.approx(
        400 * math.log(rate / (1 - rate)) / math.log(10), rel=1e-3)


def test_bt_has_no_interval_without_width():
    rows = [(f"q{i}", f"r{r}", "x", "y", "tie") for i in range(5) for r in range(2)]
    assert all(row["rating_ci"] is None for row in bt_table(judgments(rows))["conditions"])


def test_arena_ranks_count_conditions_entirely_above():
    lower = [10.0, 8.0, 1.0, 0.5]
    upper = [12.0, 11.0, 9.0, 2.0]
    assert arena_ranks(lower, upper) == [1, 1, 2, 3]


def test_elo_is_chatbot_arena_online_elo():
    data = judgments([("q1", "r", "x", "y", "a"), ("q2", "r", "y", "x", "tie")])
    ratings = elo_ratings(data)
    # First game from 1000 each: expected 0.5, x + 4 * 0.5.
    # Second: y (998) expects 1 / (1 + 10^(4/400)) and scores 0.5.
    expected_y = 1 / (1 + 10 ** (4 / 400))
    assert ratings["y"] == pytest.approx(998 + 4 * (0.5 - expected_y))
    assert ratings["x"] == pytest.approx(1002 - 4 * (0.5 - expected_y))
    assert ratings["y"] == pytest.approx(998.0230, abs=1e-4)
    assert ratings["x"] == pytest.approx(1001.9770, abs=1e-4)


def test_elo_depends_on_row_order():
    rows = [("q1", "r", "x", "y", "a"), ("q2", "r", "x", "y", "a"), ("q3", "r", "x", "y", "b")]
    forward = elo_ratings(judgments(rows))
    backward = elo_ratings(judgments(rows[::-1]))
    assert forward["x"] != pytest.approx(backward["x"])
    assert forward["x"] + forward["y"] == pytest.approx(2000)


def test_position_bias_counts_left_choices_without_ties_or_unknown_sides():
    rows = [("q", "ann", "x", "y", "a", "left")] * 4
    rows += [("q", "ann", "x", "y", "b", "right")] * 3  # right-hand b is on the left
    rows += [("q", "ann", "x", "y", "b", "left")]  # chose right
    rows += [("q", "bob", "x", "y", "tie", "left"), ("q", "bob", "x", "y", "a", "")]
    data = canonical_judgments(validate_judgments(judgments(rows, [*COLUMNS, "side_a"])))
    bias = position_bias(data)
    overall = bias["overall"]
    assert (overall["n_decisive"], overall["n_left"]) == (8, 7)
    assert overall["p_value"] == pytest.approx(18 / 256)  # 2 * (C(8,7) + C(8,8)) / 2^8
    assert overall["left_rate_ci"] == pytest.approx(wilson_interval(7, 8))
    (ann,) = bias["per_rater"]  # bob has no decisive judgment with a known side
    assert ann["rater"] == "ann" and ann["p_holm"] == pytest.approx(18 / 256)


def test_position_bias_needs_side():
    summary = preference_summary(judgments([("q", "r", "x", "y", "a")]), bootstrap=10)
    assert summary["position_bias"] is None


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        (("q", "r", "x", "y", "left"), "winner", "winner must be a, b or tie"),
        (("q", "r", "x", "x", "a"), "condition_b", "same as condition_a"),
        (("q", "", "x", "y", "a"), "rater", "empty value"),
    ],
)
def test_bad_judgments_name_row_and_column(row, column, reason):
    data = judgments([("q", "r", "x", "y", "a"), row])
    with pytest.raises(InputError, match=reason) as error:
        preference_summary(data)
    assert (error.value.column, error.value.row) == (column, 1)


def test_bad_side_and_missing_column():
    data = judgments([("q", "r", "x", "y", "a", "top")], [*COLUMNS, "side_a"])
    with pytest.raises(InputError, match="side_a must be left, right or empty"):
        preference_summary(data)
    with pytest.raises(InputError, match="missing column") as error:
        preference_summary(judgments([("q", "r", "x", "y")], COLUMNS[:4]))
    assert error.value.column == "winner"


def test_pairs_read_in_the_studys_order_dense_first():
    # Alphabetically "b-static" comes before "dense": the table would read b-static vs dense,
    # while the sequential table and the study read dense vs b-static.
    rows = [(f"q{i}", "r1", "dense", "b-static", "a" if i < 7 else "b") for i in range(10)]
    rows += [("q10", "r1", "b-static", "dense", "tie")]
    (raw,) = pair_table(judgments(rows))
    assert raw["condition_a"] == "b-static", "the fixture no longer tests a flip"
    (row,) = oriented_pairs([raw], ["dense", "b-static"])
    assert (row["condition_a"], row["condition_b"]) == ("dense", "b-static")
    assert (row["wins"], row["ties"], row["losses"]) == (7, 1, 3)
    assert row["win_rate_ties_half"] == pytest.approx(7.5 / 11)
    assert row["win_rate_ties_half"] == pytest.approx(1 - raw["win_rate_ties_half"])
    low, high = raw["win_rate_ties_half_ci_cluster"]
    assert row["win_rate_ties_half_ci_cluster"] == pytest.approx([1 - high, 1 - low])
    assert row["win_rate_ties_excluded"] == pytest.approx(0.7)
    assert row["p_holm"] == raw["p_holm"] and row["p_cluster"] == raw["p_cluster"]
    assert oriented_pairs([raw], ["b-static", "dense"]) == [raw], "already in order: unchanged"
