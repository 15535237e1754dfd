"""`build_report` on plain tables: degenerate inputs give notes, never tracebacks."""

import json

import numpy as np
import pandas as pd
import pytest

from analysis.report import build_report, report_figures

CONDITIONS = [
    {"name": "dense", "policy": {"kind": "dense"}},
    {"name": "static", "policy": {"kind": "static", "threshold": 0.05}},
    {"name": "dynamic", "policy": {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1}},
]
ACTIVE = {"dense": 1.0, "static": 0.6, "dynamic": 0.5}
JUDGMENT_COLUMNS = [
    "item",
    "rater",
    "condition_a",
    "condition_b",
    "winner",
    "side_a",
    "generation_a",
    "generation_b",
]


def generations(n_items: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "generation": f"{item}/{name}",
                "item": f"q{item}",
                "condition": name,
                "active_fraction": active,
                "tokens_per_s": 10 / active,
                "latency_s": 2 * active,
                "peak_rss_bytes": 2**30 * active,
                "passed": (item + len(name)) % 2 == 0,
            }
            for item in range(n_items)
            for name, active in ACTIVE.items()
        ]
    )


def judgments(rows) -> pd.DataFrame:
    """Rows of (item, rater, condition_a, condition_b, winner)."""
    return pd.DataFrame(
        [
            (item, rater, a, b, w, "left", f"{item[1:]}/{a}", f"{item[1:]}/{b}")
            for item, rater, a, b, w in rows
        ],
        columns=JUDGMENT_COLUMNS,
    )


def full_design(winner, raters=("r1", "r2", "r3"), n_items: int = 4) -> pd.DataFrame:
    pairs = [("dense", "static"), ("dense", "dynamic"), ("static", "dynamic")]
    return judgments(
        [
            (f"q{i}", r, a, b, winner(i, r, a, b))
            for i in range(n_items)
            for r in raters
            for a, b in pairs
        ]
    )


def report(j, g=None, conditions=CONDITIONS) -> dict:
    result = build_report(j, generations() if g is None else g, conditions, bootstrap=30)
    json.dumps(result, allow_nan=False)  # every number is plain JSON
    return result


def mixed_winner(i, r, a, b):
    return ["a", "b", "tie", "a"][(i + len(r) + len(a) * 3 + len(b) + int(r[1:])) % 4]


def test_a_normal_report_has_every_section_and_figure():
    result = report(full_design(mixed_winner))
    assert result["agreement"]["overall"]["alpha"] is not None
    assert len(result["agreement"]["per_pair"]) == 3
    assert [r["condition"] for r in result["conditions"]] == ["dense", "static", "dynamic"]
    assert result["conditions"][1]["sparsity"] == pytest.approx(0.4)
    assert result["matched_sparsity"][0]["static"] == "static"
    # Every condition passes 2 of 4 problems: Pass@1 does not move, the BT rating does.
    assert result["pareto"]["quality"] == "bt_rating"
    assert "Krippendorff" in result["methods"] and "Holm" in result["methods"]
    assert set(report_figures(result)) == {"alignment", "ratings", "pareto"}


def test_empty_study():
    result = report(judgments([]), g=generations().iloc[:0])
    assert "no judgments yet" in " ".join(result["notes"])
    assert result["agreement"]["note"] == "no judgments yet"
    assert result["preference"] is None and result["preference_note"] == "no judgments yet"
    assert "at least 10 needed" in result["mixed_model"]["note"]
    assert result["pareto"]["note"]
    assert set(report_figures(result)) == {"alignment"}


def test_items_are_counted_before_any_judgment():
    # The demo's report said "0 items · 20 finished generations" until someone rated.
    assert report(judgments([]))["counts"]["items"] == 4
    assert report(full_design(mixed_winner, n_items=2))["counts"]["items"] == 4
    assert report(judgments([]), g=generations().iloc[:0])["counts"]["items"] == 0


def test_one_condition():
    result = report(judgments([]), conditions=CONDITIONS[:1])
    assert "1 condition(s): nothing to compare" in result["notes"][0]


def test_one_rater():
    result = report(full_design(mixed_winner, raters=("r1",)))
    assert "one rater only" in result["agreement"]["note"]
    assert result["agreement"]["overall"]["alpha"] is None
    assert result["preference"]["n_raters"] == 1


def test_all_identical_values():
    result = report(full_design(lambda *_: "a"))
    assert "every rating has the same value" in result["agreement"]["note"]
    assert result["agreement"]["overall"]["alpha_ci"] is None
    assert "(separation)" in result["mixed_model"]["note"]


def test_no_unit_with_two_raters():
    single = full_design(mixed_winner, raters=("r1",))
    single["rater"] = [f"r{i}" for i in range(len(single))]
    result = report(single)
    assert "no unit has been rated by two raters yet" in result["agreement"]["note"]
    assert result["agreement"]["choice"]["percent_agreement_with_ties"] is None


def test_all_ties():
    result = report(full_design(lambda *_: "tie"))
    assert all(p["p_sign_test"] is None for p in result["preference"]["pairs"])
    assert "0 decisive judgments" in result["mixed_model"]["note"]
    assert result["agreement"]["choice"]["percent_agreement_without_ties"] is None
    ratings = [r["rating"] for r in result["preference"]["bradley_terry"]["conditions"]]
    assert np.allclose(ratings, 1000)
    # No width is not certainty: no interval, and the reason.
    for pair in result["preference"]["pairs"]:
        assert pair["win_rate_ties_half_ci_cluster"] is None
        assert pair["win_rate_ties_half_ci_note"] == (
            "none: every item's verdicts gave the same rate")
    static = result["conditions"][1]
    assert static["win_rate_vs_dense"] == 0.5 and static["win_rate_vs_dense_ci"] is None
    assert static["win_rate_vs_dense_ci_note"].startswith("none: every item")


def test_divergence_is_plotted_and_related_to_preference_where_it_can_be():
    g = generations(n_items=8)
    kl = {"dense": None, "static": 0.2, "dynamic": 0.05}
    g["kl_from_dense"] = [
        None if kl[c] is None else kl[c] * (1 + int(i[1:]) % 3 / 2)
        for i, c in zip(g["item"], g["condition"], strict=True)
    ]
    g["top1_agreement_with_dense"] = [None if v is None else 1 - v for v in g["kl_from_dense"]]
    result = report(full_design(mixed_winner, n_items=8), g)
    divergence = result["divergence"]
    # Two sparse conditions: two points lie on any line.
    assert [p["condition"] for p in divergence["condition_level"]["points"]] == [
        "dynamic", "static"]
    assert divergence["condition_level"]["correlation"] is None
    assert "a relation needs 3" in divergence["condition_level"]["note"]
    assert divergence["item_level"]["n_points"] == 16
    assert divergence["item_level"]["slope"] is not None
    assert "divergence" in report_figures(result)
    assert "least-squares slope of the win rate" in result["methods"]


def test_missing_telemetry_gives_none_not_nan():
    g = generations()
    g["tokens_per_s"] = None
    g["passed"] = None
    result = report(full_design(mixed_winner), g=g)
    assert result["conditions"][0]["tokens_per_s"] is None
    assert result["conditions"][0]["pass_at_1"] is None
    assert result["pareto"]["quality"] is None


def test_gold_judgments_feed_only_the_gold_accuracy_and_the_exclusion_effect():
    j = full_design(mixed_winner, raters=("r1", "r2", "r3"))
    j["gold"] = False
    j["gold_correct"] = None
    gold = judgments([("q9", r, "dense", "static", "a") for r in ("r1", "r2", "r3")])
    gold["gold"] = True
    gold["gold_correct"] = [True, True, False]
    result = report(pd.concat([j, gold], ignore_index=True))
    assert result["counts"]["judgments"] == len(j)
    assert (result["gold"]["n"], result["gold"]["correct"]) == (3, 2)
    assert result["exclusion"]["excluded"] == ["r3"]
    assert result["exclusion"]["kept"]["n"] == len(j) * 2 // 3
    assert set(result["exclusion"]["all"]["ratings"]) == {"dense", "static", "dynamic"}


def test_criterion_alpha_is_ordinal_over_responses_in_pairs():
    j = full_design(mixed_winner)
    j["judgment"] = range(len(j))
    ratings = pd.DataFrame(
        {
            "judgment": list(j["judgment"]) * 2,
            "criterion": ["correct"] * len(j) + ["style"] * len(j),
            # "correct": every rater gives the same values → alpha 1; "style": all 3s
            "value_a": [1 + len(a) % 5 for a in j["condition_a"]] + [3] * len(j),
            "value_b": [1 + len(b) % 5 for b in j["condition_b"]] + [3] * len(j),
        }
    )
    result = build_report(j, generations(), CONDITIONS, criterion_ratings=ratings, bootstrap=20)
    correct, style = result["criteria"]
    assert correct["criterion"] == "correct" and correct["alpha"] == pytest.approx(1.0)
    assert correct["n_units"] == 4 * 3 * 2
    assert style["alpha"] is None and "every rating has the same value" in style["alpha_note"]


def test_preference_is_style_controlled_on_what_the_outputs_show():
    # Sparser outputs run longer and raters reward length: the report controls for it.
    rng = np.random.default_rng(0)
    tokens = {"dense": 80, "static": 120, "dynamic": 180}
    g = generations(n_items=30)
    g["new_tokens"] = [int(tokens[c] * rng.lognormal(0, 0.3)) for c in g["condition"]]
    g["text"] = ["```py\nx\n```" if k % 3 else "- a\n- b" for k in range(len(g))]
    length = dict(zip(g["generation"], g["new_tokens"], strict=True))

    def longer_wins(i, r, a, b):
        ratio = np.log(length[f"{i}/{a}"] / length[f"{i}/{b}"])
        return "a" if rng.random() < 1 / (1 + np.exp(-1.5 * ratio)) else "b"

    j = full_design(longer_wins, n_items=30)
    result = report(j, g)
    style = result["preference"]["style_control"]
    # The alignment rows (and the BT panel of their figure) carry the controlled ratings.
    controlled = {r["condition"]: r["bt_rating_controlled"] for r in result["conditions"]}
    assert controlled == {r["condition"]: r["rating"] for r in style["conditions"]}
    assert report_figures(result)["alignment"]
    assert style["controls"] == ["length", "code_blocks", "markdown", "passed"]
    assert style["coefficients_ci"]["length"][0] > 0, style["coefficients_ci"]
    assert style["focus"] == "dense" and "dense's" in style["sentence"]
    plain = report(j, g.drop(columns=["new_tokens", "text"]).assign(passed=None))["preference"]
    assert plain["style_control"] is None and plain["ties_model"]["model"].startswith("Davidson")


def test_likert_means_per_condition_have_item_clustered_intervals_and_leave_gold_out():
    from analysis.quality import criterion_means

    judgments = pd.DataFrame({
        "judgment": range(8), "item": ["q1", "q1", "q2", "q2", "q3", "q3", "q4", "q4"],
        "condition_a": "dense", "condition_b": "sparse",
    })
    ratings = pd.DataFrame({
        "judgment": range(8), "criterion": "correct",
        "value_a": [5, 4, 5, 5, 4, 4, 5, 3], "value_b": [2, 2, 3, 3, 2, 1, 2, 2],
    })
    gold_rating = pd.DataFrame({"judgment": [99], "criterion": ["correct"], "value_a": [1],
                                "value_b": [5]})
    means = criterion_means(judgments, pd.concat([ratings, gold_rating]), ["dense", "sparse"],
                            bootstrap=400, seed=0)
    dense, sparse = means
    assert dense["mean"] == pytest.approx(35 / 8) and dense["n"] == 8, "judgment 99 left out"
    assert dense["ci"][0] < 35 / 8 < dense["ci"][1] and sparse["ci"][1] < dense["ci"][0]
    same = criterion_means(judgments, ratings.assign(value_b=3), ["dense", "sparse"],
                           bootstrap=400, seed=0)
    assert same[1]["ci"] is None and "no spread" in same[1]["ci_note"]
