"""Davidson's (1970) Bradley–Terry model with ties: a tie is an outcome of its own.

For conditions i and j with strengths π = e^θ::

    P(i wins) = π_i / D,  P(j wins) = π_j / D,  P(tie) = ν √(π_i π_j) / D,
    D = π_i + π_j + ν √(π_i π_j)

ν ≥ 0 is the tie parameter: two equal conditions tie with probability ν / (2 + ν), and
ν = 0 is plain Bradley–Terry without ties. Unlike the ½-a-win convention, a tie says
nothing about which side is stronger; it only says they are close. Fitted by maximum
likelihood (`analysis.choice_model`, ridge 0.01 on θ and ln ν); ratings on the raw
Bradley–Terry scale; CIs from the item-cluster bootstrap the raw ratings use.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.bootstrap import per_item, percentile_ci
from analysis.choice_model import fit_choice_model, to_rating

RIDGE = 0.01


def davidson_features(n_conditions: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Features [P, 3, C + 1] of every unordered condition pair (i < j): outcome "i wins"
    θ_i, "j wins" θ_j, "tie" (θ_i + θ_j) / 2 + ln ν; and the pairs in that order."""
    pairs = [(i, j) for i in range(n_conditions) for j in range(i + 1, n_conditions)]
    features = np.zeros((len(pairs), 3, n_conditions + 1))
    for p, (i, j) in enumerate(pairs):
        features[p, 0, i] = features[p, 1, j] = 1
        features[p, 2, [i, j]] = 0.5
        features[p, 2, n_conditions] = 1
    return features, pairs


def davidson_counts(
    judgments: pd.DataFrame, index: dict[str, int], pairs: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Per judgment its outcome as a one-hot [n, P · 3] over (pair, i wins / j wins / tie),
    in canonical order (condition_a has the lower index)."""
    position = {pair: p for p, pair in enumerate(pairs)}
    a = judgments["condition_a"].map(index).to_numpy()
    b = judgments["condition_b"].map(index).to_numpy()
    low, high = np.minimum(a, b), np.maximum(a, b)
    winner = judgments["winner"].to_numpy()
    low_won = np.where(a < b, winner == "a", winner == "b")
    outcome = np.where(winner == "tie", 2, np.where(low_won, 0, 1))
    pair = np.array([position[(i, j)] for i, j in zip(low, high, strict=True)], dtype=int)
    counts = np.zeros((len(judgments), len(pairs) * 3))
    counts[np.arange(len(judgments)), pair * 3 + outcome] = 1
    return counts


def davidson_fit(counts: np.ndarray, n_conditions: int, *, ridge: float = RIDGE) -> np.ndarray:
    """θ (mean 0) and ln ν of tallies [R, P · 3] (pairs as `davidson_features`): [R, C + 1]."""
    features, pairs = davidson_features(n_conditions)
    return fit_choice_model(
        features, counts.reshape(len(counts), len(pairs), 3), ridge=ridge, centred=n_conditions
    )


def davidson_summary(
    judgments: pd.DataFrame,
    conditions: Sequence[str],
    item_codes: np.ndarray,
    draws: np.ndarray,
    *,
    ridge: float = RIDGE,
) -> dict:
    """Davidson's tie model of canonical judgments, with item-bootstrap CIs (`draws`
    [replicates, items], the raw ratings' draws). Out: ``model``, ``tie_parameter`` (ν)
    and its ``tie_parameter_ci``, ``tie_probability_equal`` (ν / (2 + ν)), ``conditions``
    (``condition``, ``rating``, ``rating_ci``; best first), ``ridge``, ``scale``."""
    n_conditions = len(conditions)
    index = {name: i for i, name in enumerate(conditions)}
    _, pairs = davidson_features(n_conditions)
    one_hot = davidson_counts(judgments, index, pairs)
    fit = davidson_fit(one_hot.sum(axis=0)[None], n_conditions, ridge=ridge)[0]
    replicates = np.empty((0, n_conditions + 1))
    if len(draws):
        tallies = draws @ per_item(item_codes, draws.shape[1], one_hot)
        replicates = fit_choice_model(
            davidson_features(n_conditions)[0],
            tallies.reshape(len(draws), len(pairs), 3),
            ridge=ridge,
            centred=n_conditions,
            start=fit,
        )
    nu = float(np.exp(fit[-1]))
    nu_ci = percentile_ci(np.exp(replicates[:, -1]))
    ratings = to_rating(fit[:n_conditions])
    table = [
        {
            "condition": name,
            "rating": float(ratings[i]),
            "rating_ci": percentile_ci(to_rating(replicates[:, i])),
        }
        for name, i in index.items()
    ]
    return {
        "model": "Davidson (1970) Bradley-Terry with ties",
        "tie_parameter": nu,
        "tie_parameter_ci": nu_ci,
        "tie_probability_equal": nu / (2 + nu),
        "conditions": sorted(table, key=lambda row: -row["rating"]),
        "ridge": ridge,
        "scale": "rating = 1000 + 400 * theta / ln(10); mean theta 0; P(tie | equal) = nu/(2+nu)",
    }
