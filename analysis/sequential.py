"""Sequential monitoring that keeps its error rate: an always-valid confidence sequence for
a pair's win rate, so a study can be looked at after every item and stopped once the
answer is known without inflating false positives.

The unit is the item: each item's mean score for the pair (1 / ½ tie / 0 for the first
condition, averaged over its raters) lies in [0, 1], and items are independent, whatever
the raters of one item share. The sequence is Waudby-Smith & Ramdas's predictable plug-in
empirical-Bernstein confidence sequence (PrPl-EB; "Estimating means of bounded random
variables by betting", JRSS B 2024, Theorem 2): with μ̂ and σ̂² running estimates (started
at ½ and ¼) and, for item t, the bet

    λ_t = min(sqrt(2 ln(2/α) / (σ̂²_{t−1} · t · ln(1 + t))), ½),

the interval after t items is

    Σ λ_i x_i / Σ λ_i  ±  (ln(2/α) + Σ 4 (x_i − μ̂_{i−1})² ψ(λ_i)) / Σ λ_i,
    ψ(λ) = (−ln(1 − λ) − λ) / 4,

and it covers the true win rate at every t at once with probability ≥ 1 − α. It adapts to
the items' variance, so it is far narrower than a Hoeffding-style sequence. "Stop: answer
known" when the interval excludes ½.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.contracts import InputError, canonical_judgments, validate_judgments

BET_CAP = 0.5


def running_intervals(item_means: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Centre and half-width of the confidence sequence after each item, along the last
    axis of `item_means` (leading axes: separate studies)."""
    x = np.asarray(item_means, float)
    t = np.arange(1, x.shape[-1] + 1)
    mean = (0.5 + x.cumsum(axis=-1)) / (t + 1)
    variance = (0.25 + ((x - mean) ** 2).cumsum(axis=-1)) / (t + 1)
    start = np.ones((*x.shape[:-1], 1))
    mean_before = np.concatenate([0.5 * start, mean[..., :-1]], axis=-1)
    variance_before = np.concatenate([0.25 * start, variance[..., :-1]], axis=-1)
    log_term = np.log(2 / alpha)
    bet = np.minimum(np.sqrt(2 * log_term / (variance_before * t * np.log(1 + t))), BET_CAP)
    psi = (-np.log(1 - bet) - bet) / 4
    bets = bet.cumsum(axis=-1)
    centre = (bet * x).cumsum(axis=-1) / bets
    width = (log_term + (4 * (x - mean_before) ** 2 * psi).cumsum(axis=-1)) / bets
    return centre, width


def confidence_sequence(item_means: np.ndarray, *, alpha: float = 0.05) -> dict:
    """The confidence sequence of a pair's win rate now (valid at every look).

    In: each judged item's mean score for the pair's first condition, in the order the
    items were completed; α. Out: ``n_items``, ``estimate`` (the plain mean), ``ci``
    (clipped to [0, 1]; None without items), ``half_width``, ``stop`` (the interval
    excludes ½), ``alpha``."""
    item_means = np.asarray(item_means, float)
    if len(item_means) == 0:
        return {
            "n_items": 0,
            "estimate": None,
            "ci": None,
            "half_width": None,
            "stop": False,
            "alpha": alpha,
        }
    centre, width = running_intervals(item_means, alpha)
    low, high = max(0.0, centre[-1] - width[-1]), min(1.0, centre[-1] + width[-1])
    return {
        "n_items": len(item_means),
        "estimate": float(item_means.mean()),
        "ci": [float(low), float(high)],
        "half_width": float(width[-1]),
        "stop": bool(low > 0.5 or high < 0.5),
        "alpha": alpha,
    }


def stopped_early(item_means: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Whether the sequence excluded ½ at any look, one study per row of `item_means`
    [studies, items] (a look after every item)."""
    centre, width = running_intervals(item_means, alpha)
    return ((centre - width > 0.5) | (centre + width < 0.5)).any(axis=-1)


STOPPING_RULE = (
    "Each comparison of the first condition with another is monitored with an always-valid "
    "95 % confidence sequence for its win rate (ties ½; items as the unit; Waudby-Smith & "
    "Ramdas's predictable plug-in empirical-Bernstein sequence at α / comparisons, so the "
    "family keeps its error rate at every look). Stop: answer known when a sequence "
    "excludes 0.5."
)


def sequential_section(
    judgments: pd.DataFrame, order: Sequence[str], *, alpha: float = 0.05
) -> dict:
    """The confidence sequence of each first-condition comparison, items in the order they
    were completed (their last judgment's ``created_at``, else table order); α is split
    evenly across the comparisons. Out: ``rule``, ``alpha``, ``comparisons`` (``condition_a``
    the first condition, ``condition_b``, and `confidence_sequence`'s keys)."""
    if judgments.empty or len(order) < 2:
        return {"rule": STOPPING_RULE, "alpha": alpha, "comparisons": []}
    first, others = order[0], list(order[1:])
    try:
        canonical = canonical_judgments(validate_judgments(judgments), order)
    except InputError as error:
        return {"rule": STOPPING_RULE, "alpha": alpha, "comparisons": [], "note": str(error)}
    canonical["score"] = canonical["winner"].map({"a": 1.0, "tie": 0.5, "b": 0.0})
    canonical["when"] = (
        judgments["created_at"].astype(str)
        if "created_at" in judgments
        else np.arange(len(judgments))
    )
    share = alpha / len(others)
    comparisons = []
    for other in others:
        pair = canonical[(canonical["condition_a"] == first) & (canonical["condition_b"] == other)]
        if pair.empty:
            continue
        per_item = pair.groupby("item").agg(score=("score", "mean"), when=("when", "max"))
        means = per_item.sort_values("when")["score"].to_numpy()
        comparisons.append(
            {"condition_a": first, "condition_b": other, **confidence_sequence(means, alpha=share)}
        )
    return {"rule": STOPPING_RULE, "alpha": alpha, "comparisons": comparisons}
