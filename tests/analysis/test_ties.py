"""Davidson's tie model: the closed form for two conditions, an independent likelihood
maximised by scipy for three, and recovery of a planted tie parameter."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from analysis.bootstrap import item_bootstrap_counts
from analysis.choice_model import to_rating
from analysis.contracts import canonical_judgments, validate_judgments
from analysis.preference import preference_summary
from analysis.ties import davidson_summary

COLUMNS = ["item", "rater", "condition_a", "condition_b", "winner"]


def tally(wins: int, ties: int, losses: int) -> pd.DataFrame:
    winners = ["a"] * wins + ["tie"] * ties + ["b"] * losses
    return pd.DataFrame(
        [(f"q{k}", "r", "x", "y", w) for k, w in enumerate(winners)], columns=COLUMNS
    )


def summary(df: pd.DataFrame, *, bootstrap=0, seed=0, ridge=0.0) -> dict:
    judgments = canonical_judgments(validate_judgments(df))
    conditions = sorted(set(judgments["condition_a"]) | set(judgments["condition_b"]))
    codes, items = pd.factorize(judgments["item"], sort=True)
    draws = item_bootstrap_counts(len(items), bootstrap, seed)
    return davidson_summary(judgments, conditions, codes, draws, ridge=ridge)


def ratings(result: dict) -> dict[str, float]:
    return {row["condition"]: row["rating"] for row in result["conditions"]}


@pytest.mark.parametrize(("wins", "ties", "losses"), [(30, 10, 20), (5, 40, 15), (12, 1, 3)])
def test_two_conditions_match_the_closed_form(wins, ties, losses):
    # Three outcomes, two parameters: the model is saturated, so the MLE reproduces the
    # observed shares: θ_x − θ_y = ln(W / L) and ν = T / √(W L) (Davidson 1970).
    result = summary(tally(wins, ties, losses))
    assert result["tie_parameter"] == pytest.approx(ties / math.sqrt(wins * losses), rel=1e-6)
    gap = ratings(result)["x"] - ratings(result)["y"]
    assert gap == pytest.approx(400 * math.log(wins / losses) / math.log(10), abs=1e-4)


def test_three_conditions_match_an_independent_likelihood():
    rng = np.random.default_rng(0)
    names, rows = ["p", "q", "r"], []
    for k in range(300):
        a, b = rng.choice(names, size=2, replace=False)
        rows.append((f"q{k}", "r", a, b, rng.choice(["a", "b", "tie"], p=[0.45, 0.3, 0.25])))
    df = pd.DataFrame(rows, columns=COLUMNS)

    def negative_loglik(params):  # per judgment, written out from Davidson's formulas
        theta = dict(zip(names, [0.0, *params[:2]], strict=True))
        nu, total = math.exp(params[2]), 0.0
        for a, b, winner in df[["condition_a", "condition_b", "winner"]].itertuples(index=False):
            pa, pb = math.exp(theta[a]), math.exp(theta[b])
            tie = nu * math.sqrt(pa * pb)
            chosen = {"a": pa, "b": pb, "tie": tie}[winner]
            total -= math.log(chosen / (pa + pb + tie))
        return total

    reference = minimize(
        negative_loglik,
        np.zeros(3),
        method="Nelder-Mead",
        options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20_000},
    )
    theta = np.array([0.0, *reference.x[:2]])
    expected = dict(zip(names, to_rating(theta - theta.mean()), strict=True))
    result = summary(df)
    assert result["tie_parameter"] == pytest.approx(math.exp(reference.x[2]), rel=1e-4)
    for name, rating in ratings(result).items():
        assert rating == pytest.approx(expected[name], abs=0.05)


def test_planted_tie_parameter_is_recovered_within_its_ci():
    rng = np.random.default_rng(1)
    theta = {"a0": 0.4, "a1": 0.0, "a2": -0.4}
    nu, names, rows = 0.6, list(theta), []
    for item in range(200):
        for rater in range(3):
            a, b = rng.choice(names, size=2, replace=False)
            pa, pb = math.exp(theta[a]), math.exp(theta[b])
            weights = np.array([pa, pb, nu * math.sqrt(pa * pb)])
            winner = rng.choice(["a", "b", "tie"], p=weights / weights.sum())
            rows.append((f"q{item}", f"r{rater}", a, b, winner))
    result = summary(pd.DataFrame(rows, columns=COLUMNS), bootstrap=300, ridge=0.01)
    low, high = result["tie_parameter_ci"]
    assert low <= nu <= high, f"planted nu {nu} outside {result['tie_parameter_ci']}"
    assert [row["condition"] for row in result["conditions"]] == names
    assert result["tie_probability_equal"] == pytest.approx(
        result["tie_parameter"] / (2 + result["tie_parameter"])
    )


def test_no_ties_gives_a_tie_parameter_near_zero():
    result = preference_summary(tally(30, 0, 20), bootstrap=0)["ties_model"]
    assert result["tie_parameter"] < 0.01
    assert result["model"].startswith("Davidson")
