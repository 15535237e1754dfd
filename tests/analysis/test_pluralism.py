"""Subgroups of raters: planted disagreement is found, a homogeneous population is not
flagged more often than the nominal rate, and degenerate inputs give notes."""

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit

from analysis.mixed import sparsity_table
from analysis.pluralism import (
    CLUSTER_CAVEAT,
    _fit_groups,
    direction_table,
    direction_vectors,
    group_difference_test,
    rater_cells,
    rater_clusters,
    silhouette,
    subgroup_analysis,
)
from analysis.report import build_report, report_figures

ACTIVE = {"dense": 1.0, "s20": 0.8, "s40": 0.6, "s60": 0.4}
QUESTION = {"name": "side", "label": "Which side?", "choices": ["group 0", "group 1"]}


def simulate(seed, curves, *, per_group=8, n_items=5, rater_sd=0.5, ties=0.1):
    """Every rater judges every condition pair of `n_items` items. Group g's raters prefer
    the sparser output with P = expit(b0 + u_rater + b1 · gap), (b0, b1) = curves[g], u_rater
    ~ N(0, rater_sd). Out: judgments, generations, {rater: group}."""
    rng = np.random.default_rng(seed)
    generations = pd.DataFrame(
        [
            {
                "generation": f"{i}/{c}",
                "item": f"q{i}",
                "condition": c,
                "active_fraction": active + rng.uniform(-0.01, 0.01),
            }
            for i in range(n_items)
            for c, active in ACTIVE.items()
        ]
    )
    sparsity = dict(zip(generations["generation"], 1 - generations["active_fraction"], strict=True))
    names = list(ACTIVE)
    rows, groups = [], {}
    for g, (b0, b1) in enumerate(curves):
        for r in range(per_group):
            rater = f"g{g}r{r}"
            groups[rater] = f"group {g}"
            u = rng.normal(0, rater_sd)
            for i in range(n_items):
                for x, a in enumerate(names):
                    for b in names[x + 1 :]:
                        ga, gb = f"{i}/{a}", f"{i}/{b}"
                        gap = abs(sparsity[ga] - sparsity[gb])
                        if rng.random() < ties:
                            winner = "tie"
                        else:
                            sparser_won = rng.random() < expit(b0 + u + b1 * gap)
                            winner = "a" if sparser_won == (sparsity[ga] > sparsity[gb]) else "b"
                        rows.append((f"q{i}", rater, a, b, winner, ga, gb))
    judgments = pd.DataFrame(
        rows,
        columns=["item", "rater", "condition_a", "condition_b", "winner"]
        + ["generation_a", "generation_b"],
    )
    return judgments, generations, groups


def profiles(groups: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [(rater, "side", group) for rater, group in groups.items()],
        columns=["rater", "question", "answer"],
    )


OPPOSITE = [(0.8, 1.0), (-0.8, -2.0)]  # group 0 likes sparser outputs, group 1 does not
SAME = [(0.2, -1.5), (0.2, -1.5)]


def test_direction_table_agrees_with_the_mixed_models_table():
    judgments, generations, _ = simulate(0, OPPOSITE, per_group=2)
    table = direction_table(judgments, generations)
    decisive = table.dropna(subset=["sparser_won"])
    expected = sparsity_table(judgments, generations)
    assert np.allclose(decisive["gap"], expected["sparsity_diff"])
    assert np.array_equal(decisive["sparser_won"], expected["sparser_won"])
    assert table["sparser_won"].isna().sum() == (judgments["winner"] == "tie").sum()
    assert set(table["pair"]) == {
        "dense vs s20",
        "dense vs s40",
        "dense vs s60",
        "s20 vs s40",
        "s20 vs s60",
        "s40 vs s60",
    }


def test_opposite_groups_are_found_by_profile_and_by_clusters():
    judgments, generations, groups = simulate(1, OPPOSITE)
    result = subgroup_analysis(
        judgments, generations, profiles=profiles(groups), questions=[QUESTION], seed=1
    )
    json.dumps(result, allow_nan=False)
    section = result["profile"][0]
    assert section["n_answered"] == 16 and section["note"] is None
    assert section["test"]["p_value"] <= 0.002 and section["test"]["df"] == 2
    assert section["test"]["assignments"] == 12870 and section["test"]["note"] is None
    likes, dislikes = section["groups"]
    assert likes["share_ci"][0] > 0.5 > dislikes["share_ci"][1]
    assert len(likes["pairs"]) == 6 and likes["pairs"][0]["gap"] <= likes["pairs"][-1]["gap"]
    clusters = result["clusters"]
    assert clusters["k"] == 2 and clusters["silhouette"] > 0.25
    found = {}
    for rater, cluster in clusters["labels"].items():
        found.setdefault(cluster, set()).add(groups[rater])
    assert sorted(map(len, found.values())) == [1, 1], "each cluster is one planted group"
    assert clusters["test"]["exploratory"] and clusters["test"]["caveat"] == CLUSTER_CAVEAT
    assert [c["n_raters"] for c in clusters["clusters"]] == [8, 8]


def test_a_homogeneous_population_is_flagged_at_about_the_nominal_rate():
    """Raters differ individually (random intercepts) but the groups are random labels:
    the permutation test must keep its level although judgments cluster within raters."""
    p_values = []
    for seed in range(20):
        judgments, generations, groups = simulate(100 + seed, SAME)
        shuffled = dict(
            zip(groups, np.random.default_rng(seed).permutation(list(groups.values())), strict=True)
        )
        cells = rater_cells(direction_table(judgments, generations))
        test, note = group_difference_test(cells, shuffled, permutations=199, seed=seed)
        assert note is None
        p_values.append(test["p_value"])
    assert sum(p < 0.05 for p in p_values) <= 3
    assert 0.3 < np.mean(p_values) < 0.7


def test_degenerate_inputs_give_notes():
    judgments, generations, groups = simulate(2, OPPOSITE, per_group=3)
    empty = subgroup_analysis(judgments.iloc[:0], generations)
    assert empty["profile_note"] == "the study asks no profile questions"
    assert "0 have" in empty["clusters"]["note"] and empty["clusters"]["vectors"] == []

    unanswered = subgroup_analysis(judgments, generations, questions=[QUESTION])
    assert unanswered["profile_note"] == "no rater has answered the profile questions"

    one_group = profiles({rater: "group 0" for rater in groups})
    section = subgroup_analysis(judgments, generations, profiles=one_group, questions=[QUESTION])[
        "profile"
    ][0]
    assert section["test"] is None
    assert section["note"] == "all 6 raters who answered chose “group 0”: nothing to compare"

    few = subgroup_analysis(
        judgments, generations, profiles=profiles(groups), questions=[QUESTION], permutations=99
    )["profile"][0]["test"]
    assert few["assignments"] == 20 and "cannot fall below about 1/20" in few["note"]

    lonely = {**{r: "group 0" for r in groups}, "g1r0": "group 1"}
    section = subgroup_analysis(
        judgments, generations, profiles=profiles(lonely), questions=[QUESTION]
    )["profile"][0]
    assert section["test"] is None and "needs two groups with at least 2 raters" in section["note"]
    shown = {g["group"]: g for g in section["groups"]}
    assert shown["group 1"] == {
        "group": "group 1",
        "n_raters": 1,
        "note": "fewer than 2 raters with data: not shown",
    }

    cells = rater_cells(direction_table(judgments.assign(winner="tie"), generations))
    assert group_difference_test(cells, groups)[1].startswith("needs two groups")
    cells = rater_cells(direction_table(judgments, generations))
    assert group_difference_test(cells, groups, permutations=0)[1].startswith(
        "the permutation test is switched off"
    )


def test_all_verdicts_one_way_and_identical_raters():
    judgments, generations, groups = simulate(3, [(30, 0), (30, 0)], per_group=4, ties=0)
    cells = rater_cells(direction_table(judgments, generations))
    test, note = group_difference_test(cells, groups)
    assert test is None and note == "every tested judgment went the same way: nothing to compare"
    clusters = rater_clusters(direction_vectors(direction_table(judgments, generations)))
    assert clusters["note"] == "every rater has the same direction vector: nothing to cluster"


def test_clusters_need_enough_raters_per_cluster():
    vectors = pd.DataFrame(
        {"choice: x": [1.0, 0.9, 0.8, -1.0, -0.9, 0.95, 0.85]}, index=[f"r{i}" for i in range(7)]
    )
    result = rater_clusters(vectors)
    assert result["k"] is None and "clusters of at least 3 raters" in result["note"]
    assert rater_clusters(vectors.iloc[:5])["note"].startswith("clustering needs at least 6")


def test_silhouette_by_hand():
    points = np.array([[0.0], [1.0], [5.0], [7.0]])
    distances = np.abs(points - points.T)
    labels = np.array([1, 1, 2, 2])
    # a = distance to the own cluster's other point; b = mean distance to the other cluster
    widths = [(6 - 1) / 6, (5 - 1) / 5, (4.5 - 2) / 4.5, (6.5 - 2) / 6.5]
    assert silhouette(distances, labels) == pytest.approx(np.mean(widths))
    assert silhouette(distances, np.array([1, 2, 2, 2])) == pytest.approx(
        np.mean([0, (1 - 5) / 5, (5 - 3) / 5, (7 - 4) / 7])  # alone in its cluster: 0
    )


def test_the_newton_fits_match_statsmodels_and_stay_finite_under_separation():
    rng = np.random.default_rng(4)
    x = rng.uniform(-0.3, 0.3, 40)
    n = rng.integers(1, 6, 40).astype(float)
    won = rng.binomial(n.astype(int), expit(0.4 - 2 * x)).astype(float)
    coef, loglik = _fit_groups(won, n, x, np.zeros((1, 40), dtype=int), 1)
    glm = sm.GLM(
        np.column_stack([won, n - won]), sm.add_constant(x), family=sm.families.Binomial()
    ).fit()
    assert coef[0, 0] == pytest.approx(glm.params, rel=0.005)
    separated, _ = _fit_groups(n, n, x, np.zeros((1, 40), dtype=int), 1)
    assert np.isfinite(separated).all() and separated[0, 0, 0] > 5


def test_criterion_directions_point_to_the_output_rated_higher():
    judgments, generations, _ = simulate(5, OPPOSITE, per_group=1)
    judgments["judgment"] = range(len(judgments))
    table = direction_table(judgments, generations)
    # "style": the sparser output always gets 5 and the denser 1 → +1 for everybody
    ratings = pd.DataFrame(
        {
            "judgment": table["judgment"],
            "criterion": "style",
            "value_a": np.where(table["a_sparser"], 5, 1),
            "value_b": np.where(table["a_sparser"], 1, 5),
        }
    )
    vectors = direction_vectors(table, ratings)
    assert vectors["criterion: style"].tolist() == [1.0, 1.0]
    widest = vectors["choice: dense vs s60"]
    assert widest["g0r0"] > 0 > widest["g1r0"]


def test_the_report_carries_subgroups_a_figure_and_no_answer_of_a_single_rater():
    judgments, generations, groups = simulate(6, OPPOSITE, per_group=4, n_items=3)
    conditions = [{"name": c, "policy": {"kind": "dense"}} for c in ACTIVE]
    answers = profiles(groups)
    report = build_report(
        judgments,
        generations.assign(tokens_per_s=1.0, latency_s=1.0, peak_rss_bytes=1, passed=None),
        conditions,
        profiles=answers,
        profile_questions=[QUESTION],
        bootstrap=0,
        permutations=99,
    )
    text = json.dumps(report["subgroups"], allow_nan=False)
    assert report["permutations"] == 99 and report["subgroups"]["profile"][0]["test"]
    assert "permutation" in report["methods"] and "exploratory" in report["methods"]
    assert "subgroups" in report_figures(report)
    profile_part = json.dumps(report["subgroups"]["profile"])
    assert not any(rater in profile_part for rater in groups), "no rater next to an answer"
    assert text.count("group 0") == profile_part.count("group 0")
