"""Style-controlled Bradley–Terry: the fit equals a plain logistic regression (statsmodels)
on the same rows, the raw model equals choix, and a planted length effect is recovered
with CIs that cover it at about the nominal rate."""

import choix
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from analysis.bootstrap import item_bootstrap_counts
from analysis.choice_model import to_rating
from analysis.contracts import InputError, canonical_judgments, validate_judgments
from analysis.preference import preference_summary
from analysis.style import (
    _sentence,
    parse_controls,
    style_controlled_bt,
    style_covariates,
    style_features,
)

STRENGTHS = {"dense": 0.3, "s50": 0.0, "s80": -0.3}
MEAN_TOKENS = {"dense": 100, "s50": 150, "s80": 220}  # sparser outputs ramble on
LENGTH_EFFECT = 0.8


def simulate(
    seed: int, n_items: int = 150, tie_rate: float = 0.0, length_effect: float = LENGTH_EFFECT
) -> pd.DataFrame:
    """Three raters per item, each judging a random pair: Bradley–Terry on the planted
    strengths plus `length_effect` · ln(tokens_a / tokens_b)."""
    rng = np.random.default_rng(seed)
    names = np.array(list(STRENGTHS))
    n = n_items * 3
    pairs = np.argsort(rng.random((n, len(names))), axis=1)[:, :2]  # two distinct conditions
    a, b = names[pairs[:, 0]], names[pairs[:, 1]]
    strength, mean_tokens = (pd.Series(d) for d in (STRENGTHS, MEAN_TOKENS))
    tokens = rng.lognormal(np.log(mean_tokens[np.r_[a, b]].to_numpy()), 0.3).reshape(2, n)
    logit = strength[a].to_numpy() - strength[b].to_numpy()
    logit += length_effect * np.log(tokens[0] / tokens[1])
    winner = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "a", "b").astype(object)
    winner[rng.random(n) < tie_rate] = "tie"
    return pd.DataFrame(
        {
            "item": [f"q{k // 3}" for k in range(n)],
            "rater": [f"r{k % 3}" for k in range(n)],
            "condition_a": a,
            "condition_b": b,
            "winner": winner,
            "length_a": tokens[0],
            "length_b": tokens[1],
        }
    )


def fit(df: pd.DataFrame, controls, *, bootstrap=0, seed=0, ridge=0.01, focus=None) -> dict:
    judgments = canonical_judgments(validate_judgments(df))
    covariates = style_covariates(df, controls)
    swapped = (df["condition_a"] != judgments["condition_a"]).to_numpy()
    covariates = covariates.mul(np.where(swapped, -1.0, 1.0), axis=0)
    conditions = sorted(STRENGTHS) if set(df["condition_a"]) <= set(STRENGTHS) else None
    conditions = conditions or sorted(set(df["condition_a"]) | set(df["condition_b"]))
    codes, items = pd.factorize(judgments["item"], sort=True)
    draws = item_bootstrap_counts(len(items), bootstrap, seed)
    return style_controlled_bt(
        judgments, covariates, conditions, codes, draws, focus=focus, ridge=ridge
    )


def test_unpenalised_fit_equals_statsmodels_logistic_regression():
    df = simulate(seed=1, tie_rate=0.2)
    df["code_blocks_a"] = np.random.default_rng(2).integers(0, 3, len(df))
    df["code_blocks_b"] = np.random.default_rng(3).integers(0, 3, len(df))
    result = fit(df, ["length", "code_blocks"], ridge=0.0)
    # Reference: a tie is two rows of weight ½ (a won, b won); condition "dense" is the
    # reference level, so its column is dropped.
    names = sorted(STRENGTHS)
    design = pd.DataFrame(
        {c: (df["condition_a"] == c).astype(float) - (df["condition_b"] == c) for c in names}
    )
    design["length"] = np.log(df["length_a"] / df["length_b"])
    design["code_blocks"] = df["code_blocks_a"] - df["code_blocks_b"]
    score = df["winner"].map({"a": 1.0, "tie": 0.5, "b": 0.0})
    rows = pd.concat([design, design], ignore_index=True).drop(columns=names[0])
    outcome = np.concatenate([np.ones(len(df)), np.zeros(len(df))])
    weights = np.concatenate([score, 1 - score])
    reference = sm.GLM(outcome, rows, family=sm.families.Binomial(), freq_weights=weights).fit()
    for control in ("length", "code_blocks"):
        assert result["coefficients"][control] == pytest.approx(
            reference.params[control], abs=1e-6
        ), f"{control}: ours {result['coefficients'][control]}, statsmodels {reference.params}"
    theta = np.array([0.0, *(reference.params[c] for c in names[1:])])
    expected = dict(zip(names, to_rating(theta - theta.mean()), strict=True))
    for row in result["conditions"]:
        assert row["rating"] == pytest.approx(expected[row["condition"]], abs=1e-4)


def test_without_covariates_the_model_is_choix_bradley_terry():
    df = simulate(seed=4, tie_rate=0.1)
    result = fit(df, ["length"], ridge=0.0)
    index = {name: i for i, name in enumerate(sorted(STRENGTHS))}
    wins = np.zeros((3, 3))
    score = {"a": 1.0, "tie": 0.5, "b": 0.0}
    for a, b, winner in df[["condition_a", "condition_b", "winner"]].itertuples(index=False):
        wins[index[a], index[b]] += score[winner]
        wins[index[b], index[a]] += 1 - score[winner]
    theta = choix.ilsr_pairwise_dense(wins, alpha=0.0, max_iter=10_000, tol=1e-12)
    expected = dict(zip(index, to_rating(theta - theta.mean()), strict=True))
    for row in result["conditions"]:
        assert row["raw_rating"] == pytest.approx(expected[row["condition"]], abs=1e-3)


def test_planted_length_effect_is_recovered_and_its_cis_cover_it():
    covered, studies = 0, 24
    controlled, raw = [], []
    theta = np.array(list(STRENGTHS.values()))
    truth = to_rating(theta - theta.mean())
    for seed in range(studies):
        result = fit(simulate(seed, n_items=120), ["length"], bootstrap=150, seed=seed)
        low, high = result["coefficients_ci"]["length"]
        covered += low <= LENGTH_EFFECT <= high
        rows = {row["condition"]: row for row in result["conditions"]}
        controlled.append([rows[c]["rating"] for c in STRENGTHS])
        raw.append([rows[c]["raw_rating"] for c in STRENGTHS])
    assert covered / studies >= 0.83, f"95 % CIs covered the length effect {covered}/{studies}"
    controlled_bias = np.mean(controlled, axis=0) - truth
    raw_bias = np.mean(raw, axis=0) - truth
    assert np.abs(controlled_bias).max() < 15, f"controlled ratings off by {controlled_bias}"
    # Uncontrolled, the long-winded sparse outputs look better than they are.
    assert raw_bias[2] > 40 and raw_bias[0] < -40, f"raw ratings off by {raw_bias}"


def test_sentence_says_how_much_length_explains():
    result = fit(simulate(seed=0, n_items=300), ["length"], focus="s80")
    s80 = next(row for row in result["explained"] if row["condition"] == "s80")
    # Raw, s80 looks better than average; at equal length it is worse: more than explained.
    assert s80["raw_advantage"] > 0 > s80["controlled_advantage"]
    assert s80["share_explained"] > 1
    assert result["sentence"].startswith("Style more than explains s80's advantage")
    # A weak length effect only hides part of the short dense outputs' advantage.
    result = fit(simulate(seed=0, n_items=300, length_effect=0.3), ["length"], focus="dense")
    dense = next(row for row in result["explained"] if row["condition"] == "dense")
    assert 0 < dense["raw_advantage"] < dense["controlled_advantage"]
    assert result["sentence"].startswith("Style hides part of dense's advantage")


def test_mirrored_rows_give_the_same_fit():
    df = simulate(seed=5, tie_rate=0.1)
    mirrored = df.rename(
        columns={
            "condition_a": "condition_b",
            "condition_b": "condition_a",
            "length_a": "length_b",
            "length_b": "length_a",
        }
    )
    mirrored["winner"] = mirrored["winner"].map({"a": "b", "b": "a", "tie": "tie"})
    one, other = fit(df, ["length"]), fit(mirrored, ["length"])
    assert one["coefficients"]["length"] == pytest.approx(other["coefficients"]["length"])


def test_preference_summary_puts_style_control_beside_bradley_terry():
    df = simulate(seed=6).astype(str)
    summary = preference_summary(df, bootstrap=30, controls=["length"], focus="dense")
    style = summary["style_control"]
    assert set(style["coefficients"]) == set(style["coefficients_ci"]) == {"length"}
    assert {row["condition"] for row in style["conditions"]} == set(STRENGTHS)
    assert all(set(row) >= {"condition", "rating", "rating_ci"} for row in style["conditions"])
    assert preference_summary(df, bootstrap=0)["style_control"] is None


def test_style_features_count_code_blocks_and_markdown():
    text = (
        "# Title\n\n- one\n- two\n1. first\n**bold** and __also__\n"
        "```py\n# not a header\n- no\n```\n"
    )
    assert style_features(text) == {"code_blocks": 1, "markdown": 6}
    assert style_features("plain words") == {"code_blocks": 0, "markdown": 0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"length_a": ["0", "10"]}, "column 'length_a': must be more than 0 tokens, not '0'"),
        ({"length_b": ["5", "many"]}, "column 'length_b': not a finite number: 'many'"),
    ],
)
def test_bad_covariates_name_row_and_column(change, message):
    df = pd.DataFrame(
        {
            "item": ["q1", "q2"],
            "rater": ["r", "r"],
            "condition_a": ["x", "x"],
            "condition_b": ["y", "y"],
            "winner": ["a", "b"],
            "length_a": ["5", "6"],
            "length_b": ["5", "6"],
        }
    )
    with pytest.raises(InputError, match=message):
        preference_summary(df.assign(**change), bootstrap=0, controls=["length"])
    with pytest.raises(InputError, match="needs column.s. passed_a, passed_b"):
        preference_summary(df, bootstrap=0, controls=["passed"])


def test_passed_may_be_blank_for_unscored_outputs():
    df = pd.DataFrame(
        {"passed_a": ["1", "", "0.5", "1"], "passed_b": ["0", "1", "", "0.25"]},
        index=[2, 3, 4, 5],
    )
    assert style_covariates(df, ["passed"])["passed"].tolist() == [1.0, 0.0, 0.0, 0.75]
    with pytest.raises(InputError, match="share from 0 to 1"):
        style_covariates(df.assign(passed_a=["2", "", "", ""]), ["passed"])


def test_controls_are_parsed_and_checked():
    assert parse_controls("length, code_blocks,length") == ["length", "code_blocks"]
    with pytest.raises(InputError, match="unknown control.s. size"):
        parse_controls("length,size")


def test_sentence_reads_plainly_when_style_explains_part_of_an_advantage():
    row = {
        "condition": "dense",
        "raw_advantage": 60.0,
        "controlled_advantage": 36.0,
        "share_explained": 0.4,
        "share_explained_by": {"length": 0.4},
    }
    assert _sentence(row) == (
        "Length explains 40 % of dense's advantage over the other conditions "
        "(+60 rating points raw, +36 after control)."
    )
    row["share_explained_by"] = {"length": 0.3, "code_blocks": 0.15}
    assert _sentence(row) == (
        "Style explains 40 % of dense's advantage over the other conditions (length 30 %, "
        "code blocks 15 % alone; +60 rating points raw, +36 after control)."
    )
