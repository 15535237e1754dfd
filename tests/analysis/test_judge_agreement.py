"""The LLM judge against the humans (analysis/judge_agreement.py): kappa checked against a
published worked example and statsmodels, the two orders combined, agreement intervals from
the item bootstrap, position bias and whether the judge separates what the humans separate."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.inter_rater import cohens_kappa as statsmodels_kappa

from analysis.judge_agreement import (
    VERDICT_COLUMNS,
    agreement_with_humans,
    cohen_kappa,
    combined_verdicts,
    judge_effect,
    judge_position_bias,
    judge_section,
    separation,
)
from analysis.preference import oriented_pairs, pair_table

ORDER = ["dense", "sparse"]


def test_kappa_of_the_worked_example():
    # Wikipedia's "Cohen's kappa" worked example: 50 proposals, both yes 20, A yes B no 5,
    # A no B yes 10, both no 15: p_o = 0.7, p_e = 0.5, kappa = 0.4.
    assert cohen_kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4)


def test_kappa_equals_statsmodels_on_random_tables():
    rng = np.random.default_rng(3)
    for _ in range(20):
        table = rng.integers(0, 30, size=(3, 3))
        assert cohen_kappa(table) == pytest.approx(statsmodels_kappa(table).kappa)


def test_kappa_is_undefined_when_both_always_say_the_same_one_thing():
    assert np.isnan(cohen_kappa(np.array([[7, 0], [0, 0]])))


def verdicts(rows):
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def test_two_orders_combine_and_disagreeing_orders_cancel_to_a_tie():
    table = verdicts([
        ("j", "i1", "dense", "sparse", "ab", "a"), ("j", "i1", "dense", "sparse", "ba", "a"),
        ("j", "i2", "dense", "sparse", "ab", "a"), ("j", "i2", "dense", "sparse", "ba", "b"),
        ("j", "i3", "dense", "sparse", "ab", None), ("j", "i3", "dense", "sparse", "ba", "b"),
        ("j", "i4", "dense", "sparse", "ab", None), ("j", "i4", "dense", "sparse", "ba", None),
    ])  # fmt: skip
    combined = combined_verdicts(table).set_index("item")
    assert combined["winner"].to_dict() == {"i1": "a", "i2": "tie", "i3": "b"}
    assert combined["orders"].to_dict() == {"i1": 2, "i2": 2, "i3": 1}


def humans_and_judge(n_items=30, seed=0, judge_agrees=0.8):
    """Two raters per item prefer dense 80 % of the time; the judge copies rater r0's
    verdict with probability ``judge_agrees`` (else says the opposite), in both orders."""
    rng = np.random.default_rng(seed)
    humans, judge = [], []
    for i in range(n_items):
        item = f"item{i:02d}"
        for rater in ("r0", "r1"):
            winner = "a" if rng.random() < 0.8 else "b"
            humans.append((item, rater, "dense", "sparse", winner))
            if rater == "r0":
                said = winner if rng.random() < judge_agrees else {"a": "b", "b": "a"}[winner]
                judge += [("j", item, "dense", "sparse", o, said) for o in ("ab", "ba")]
    humans = pd.DataFrame(humans, columns=["item", "rater", "condition_a", "condition_b", "winner"])
    return humans, verdicts(judge)


def test_agreement_counts_each_human_verdict_against_the_judge_once():
    humans, judge = humans_and_judge()
    result = agreement_with_humans(
        humans, combined_verdicts(judge), ORDER, bootstrap=200, seed=0
    )
    overall = result["overall"]
    combined = combined_verdicts(judge).set_index("item")["winner"]
    expected = (humans["winner"].to_numpy() == combined[humans["item"]].to_numpy()).mean()
    assert overall["n"] == len(humans) and overall["n_items"] == 30
    assert overall["agreement"] == pytest.approx(expected)
    low, high = overall["agreement_ci"]
    assert low < overall["agreement"] < high
    codes = {"a": 0, "b": 2}
    table = np.zeros((3, 3))
    for h, j in zip(humans["winner"], combined[humans["item"]], strict=True):
        table[codes[h], codes[j]] += 1
    assert overall["kappa"] == pytest.approx(statsmodels_kappa(table).kappa)
    assert overall["kappa_ci"][0] < overall["kappa"] < overall["kappa_ci"][1]
    assert [p["pair"] for p in result["per_pair"]] == ["dense vs sparse"]
    assert result["per_pair"][0]["kappa"] == pytest.approx(overall["kappa"])


def test_agreement_reads_pairs_stored_either_way_round_in_condition_order():
    humans = pd.DataFrame(
        [("i1", "r", "sparse", "dense", "b"), ("i2", "r", "dense", "sparse", "b")],
        columns=["item", "rater", "condition_a", "condition_b", "winner"],
    )
    judge = verdicts([("j", "i1", "dense", "sparse", "ab", "a"),
                      ("j", "i2", "sparse", "dense", "ab", "a")])  # fmt: skip
    overall = agreement_with_humans(
        humans, combined_verdicts(judge), ORDER, bootstrap=50, seed=0
    )["overall"]
    assert overall["n"] == 2 and overall["agreement"] == 1.0


def test_position_bias_counts_the_first_shown_and_the_two_orders():
    table = verdicts([
        # Picks whatever it is shown first: a in "ab", b in "ba".
        ("j", "i1", "dense", "sparse", "ab", "a"), ("j", "i1", "dense", "sparse", "ba", "b"),
        ("j", "i2", "dense", "sparse", "ab", "a"), ("j", "i2", "dense", "sparse", "ba", "b"),
        # Consistent: dense both times.
        ("j", "i3", "dense", "sparse", "ab", "a"), ("j", "i3", "dense", "sparse", "ba", "a"),
        # Second shown both times.
        ("j", "i4", "dense", "sparse", "ab", "b"), ("j", "i4", "dense", "sparse", "ba", "a"),
        ("j", "i5", "dense", "sparse", "ab", "tie"), ("j", "i5", "dense", "sparse", "ba", "a"),
        ("j", "i6", "dense", "sparse", "ab", None), ("j", "i6", "dense", "sparse", "ba", "a"),
    ])  # fmt: skip
    bias = judge_position_bias(table, ORDER)
    # Decisive: 10 verdicts (i5's tie and i6's unparseable left out); the first shown won
    # in i1 and i2 (both orders) and i3's "ab"; in "ba" order b is shown first.
    assert (bias["n_decisive"], bias["n_first"]) == (10, 5)
    assert bias["pairs_both_orders"] == 5
    assert (bias["consistent"], bias["first_both"], bias["second_both"], bias["one_tie"]) == (
        1, 2, 1, 1
    )


def test_the_judge_separates_what_the_humans_separate_by_the_same_test():
    humans, judge = humans_and_judge(n_items=40, judge_agrees=1.0)
    human_pairs = oriented_pairs(pair_table(humans), ORDER)
    section = judge_section(humans, judge, ORDER, human_pairs=human_pairs, bootstrap=100, seed=0)
    (entry,) = section["judges"]
    (row,) = entry["separation"]
    assert row["human"] == "first" and row["human_p"] == human_pairs[0]["p_cluster_holm"]
    assert row["judge"] == "first" and row["same"] is True
    names = [r["condition"] for r in entry["bradley_terry"]["conditions"]]
    assert names[0] == "dense" and entry["unparseable"] == 0


def test_a_judge_that_says_the_opposite_does_not_reach_the_humans_conclusion():
    humans, judge = humans_and_judge(n_items=40, judge_agrees=0.0)
    human_pairs = oriented_pairs(pair_table(humans), ORDER)
    (entry,) = judge_section(
        humans, judge, ORDER, human_pairs=human_pairs, bootstrap=100, seed=0
    )["judges"]
    (row,) = entry["separation"]
    assert row["judge"] == "second" and row["same"] is False
    assert entry["agreement"]["overall"]["kappa"] < 0


def test_separation_without_a_judge_row_says_so():
    rows = separation([{"condition_a": "dense", "condition_b": "sparse",
                        "win_rate_ties_half": 0.9, "p_cluster_holm": 0.001}], [])  # fmt: skip
    assert rows[0]["human"] == "first" and rows[0]["judge"] is None and rows[0]["same"] is None


def test_no_verdicts_and_only_unparseable_ones():
    humans, _ = humans_and_judge(n_items=3)
    assert judge_section(humans, verdicts([]), ORDER, human_pairs=None, bootstrap=10,
                         seed=0)["note"]  # fmt: skip
    silent = verdicts([("j", "item00", "dense", "sparse", o, None) for o in ("ab", "ba")])
    (entry,) = judge_section(humans, silent, ORDER, human_pairs=None, bootstrap=10,
                             seed=0)["judges"]  # fmt: skip
    assert entry["unparseable"] == 2 and entry["bradley_terry"] is None
    assert entry["agreement"]["overall"] is None and entry["note"]


def test_judge_effect_plans_for_the_comparison_nearest_to_no_preference():
    order = ["dense", "s1", "s2"]
    rows = []
    for i in range(10):  # dense beats s1 in 9 of 10, s2 in 6 of 10 (one stored b-first)
        rows.append(("j", f"i{i}", "dense", "s1", "ab", "a" if i < 9 else "b"))
        rows.append(("j", f"i{i}", "s2", "dense", "ab", "b" if i < 6 else "a"))
    rows += [("j", "i0", "dense", "s2", "ba", "tie"), ("j", "i1", "dense", "s2", "ba", None)]
    effect = judge_effect(verdicts(rows), order)
    assert effect["hardest"] == "s2" and effect["win_rate"] == pytest.approx(0.6)
    assert effect["tie_rate"] == pytest.approx(1 / 21)
    by_condition = {c["condition"]: c for c in effect["comparisons"]}
    assert by_condition["s1"]["first_share"] == pytest.approx(0.9)
    assert (by_condition["s2"]["n"], by_condition["s2"]["ties"]) == (11, 1)


def test_judge_effect_of_a_baseline_the_judge_finds_worse_is_its_size():
    rows = [("j", f"i{i}", "dense", "s", "ab", "b" if i < 8 else "a") for i in range(10)]
    assert judge_effect(verdicts(rows), ["dense", "s"])["win_rate"] == pytest.approx(0.8)
    assert judge_effect(verdicts(rows[:0]), ["dense", "s"]) is None
