"""Does divergence from dense go with human preference? The worker measures, per output of a
sparse condition, the mean KL(dense ‖ condition) of dense's answer teacher-forced under both
(`inference.divergence`); raters judge each condition against dense. Two questions:

- *condition level*: across the sparse conditions, does the win rate against dense (ties ½)
  fall as the mean KL grows? Pearson's correlation and the least-squares slope of the win
  rate on the mean KL, over the conditions that have both;
- *item level*: within a condition, do the items whose output diverged more lose to dense
  more often? The same on (item, condition) points, each condition's mean taken out of both
  (condition fixed effects), so it is not the condition-level relation again.

Intervals: percentile bootstrap over items (every judgment and every output of a drawn
item comes along, so a condition's win rate and its KL are resampled together). None, with
the reason, where the relation cannot be estimated (fewer than three conditions, too few
items, no spread).

In: *judgments* ``item, rater, condition_a, condition_b, winner`` (gold checks left out),
*generations* ``item, condition, kl_from_dense``, the dense condition's name. No Django.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.bootstrap import item_bootstrap_counts, percentile_ci

# Fewest conditions (points) a condition-level correlation is drawn through: two points
# always lie on a line.
MIN_CONDITIONS = 3
# Fewest (item, condition) points beyond one per condition for the item-level relation.
MIN_ITEM_DEGREES = 3


def divergence_preference(
    judgments: pd.DataFrame,
    generations: pd.DataFrame,
    dense: str | None,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """The condition-level and item-level relations of win rate against dense to KL from
    dense (see the module docstring). Out: ``condition_level`` (``points``: per condition
    ``condition``, ``kl_from_dense``, ``win_rate_vs_dense``, ``n_judgments``; ``correlation``
    and ``slope`` (win rate per nat) each with ``_ci``; ``note``), ``item_level`` (``n_points``,
    ``n_items``, ``n_conditions``, ``correlation``, ``slope`` with ``_ci``; ``note``),
    ``bootstrap``, ``seed``."""
    tables = _per_item(judgments, generations, dense)
    out = {"bootstrap": bootstrap, "seed": seed,
           "condition_level": _empty_condition_level(), "item_level": _empty_item_level()}
    if dense is None:
        for key in ("condition_level", "item_level"):
            out[key]["note"] = "not estimated: the study has no dense condition"
        return out
    if tables is None:
        for key in ("condition_level", "item_level"):
            out[key]["note"] = ("not estimated: no sparse condition has both a verdict "
                                "against dense and a measured divergence")
        return out
    names, (score_sum, judged), (kl_sum, measured) = tables
    draws = item_bootstrap_counts(score_sum.shape[1], bootstrap, seed)
    out["condition_level"] = _condition_level(names, score_sum, judged, kl_sum, measured, draws)
    out["item_level"] = _item_level(score_sum, judged, kl_sum, measured, draws)
    return out


def _per_item(judgments: pd.DataFrame, generations: pd.DataFrame, dense: str | None
              ) -> tuple[list[str], tuple, tuple] | None:
    """The sparse conditions with both, and per condition (rows) and item (columns): the
    condition's summed score against dense and its judgments; the summed KL and the
    outputs measured. None where no condition has both."""
    if dense is None or judgments.empty or "kl_from_dense" not in generations:
        return None
    against = judgments[(judgments["condition_a"] == dense) ^ (judgments["condition_b"] == dense)]
    condition = against["condition_a"].where(against["condition_b"] == dense,
                                             against["condition_b"])
    won = np.where(against["condition_a"] == condition, "a", "b")
    score = np.where(against["winner"] == "tie", 0.5,
                     (against["winner"].to_numpy() == won).astype(float))
    judged = pd.DataFrame({"condition": condition.to_numpy(), "item": against["item"].to_numpy(),
                           "score": score})
    kl = generations[generations["kl_from_dense"].notna() & (generations["condition"] != dense)]
    kl = kl[["condition", "item", "kl_from_dense"]]
    both = sorted(set(judged["condition"]) & set(kl["condition"]))
    if not both:
        return None
    items = sorted(set(judged["item"]) | set(kl["item"]), key=str)

    def table(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
        grouped = frame[frame["condition"].isin(both)].groupby(["condition", "item"])[column]
        sums = grouped.sum().unstack().reindex(index=both, columns=items).fillna(0.0)
        counts = grouped.count().unstack().reindex(index=both, columns=items).fillna(0)
        return sums.to_numpy(float), counts.to_numpy(float)

    return both, table(judged, "score"), table(kl, "kl_from_dense")


def _ratio(draws: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per replicate (rows of `draws`) and condition: Σ weighted sums / Σ weighted counts."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (draws @ sums.T) / (draws @ counts.T)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pearson's r and the least-squares slope of y on x along the last axis (rows of
    centred x, y); NaN without spread."""
    sxy = (x * y).sum(axis=-1)
    sxx = (x * x).sum(axis=-1)
    syy = (y * y).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy / np.sqrt(sxx * syy), sxy / sxx


def _centred(values: np.ndarray) -> np.ndarray:
    return values - np.nanmean(values, axis=-1, keepdims=True)


def _condition_level(names, score_sum, judged, kl_sum, measured, draws) -> dict:
    out = _empty_condition_level()
    rate = score_sum.sum(axis=1) / np.where(judged.sum(axis=1) > 0, judged.sum(axis=1), np.nan)
    kl = kl_sum.sum(axis=1) / np.where(measured.sum(axis=1) > 0, measured.sum(axis=1), np.nan)
    usable = ~np.isnan(rate) & ~np.isnan(kl)
    out["points"] = [
        {"condition": name, "kl_from_dense": float(kl[i]), "win_rate_vs_dense": float(rate[i]),
         "n_judgments": int(judged[i].sum())}
        for i, name in enumerate(names) if usable[i]
    ]
    if usable.sum() < MIN_CONDITIONS:
        out["note"] = (f"not estimated: {int(usable.sum())} sparse condition(s) have both a "
                       f"win rate against dense and a measured divergence; a relation needs "
                       f"{MIN_CONDITIONS}")
        return out
    correlation, slope = _line(_centred(kl[usable]), _centred(rate[usable]))
    if np.isnan(correlation):
        out["note"] = "not estimated: every condition has the same mean KL or the same win rate"
        return out
    out["correlation"], out["slope"] = float(correlation), float(slope)
    replicate_rate = _ratio(draws, score_sum[usable], judged[usable])
    replicate_kl = _ratio(draws, kl_sum[usable], measured[usable])
    # A replicate that drew no judgment of some condition has no point for it: left out.
    complete = ~np.isnan(replicate_rate).any(axis=1) & ~np.isnan(replicate_kl).any(axis=1)
    r, b = _line(_centred(replicate_kl[complete]), _centred(replicate_rate[complete]))
    out["correlation_ci"], out["slope_ci"] = percentile_ci(r), percentile_ci(b)
    return out


def _item_level(score_sum, judged, kl_sum, measured, draws) -> dict:
    out = _empty_item_level()
    both = (judged > 0) & (measured > 0)
    used = both.sum(axis=1) >= 2  # a condition with one item has no within-condition spread
    points = int(both[used].sum())
    out["n_points"], out["n_conditions"] = points, int(used.sum())
    out["n_items"] = int(both[used].any(axis=0).sum())
    if points - used.sum() < MIN_ITEM_DEGREES:
        out["note"] = (f"not estimated: {points} (item, condition) points with both a verdict "
                       f"against dense and a measured divergence, in {int(used.sum())} "
                       f"condition(s) with two items or more; the within-condition relation "
                       f"needs {MIN_ITEM_DEGREES} more points than conditions")
        return out
    mask = both[used]
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.where(mask, score_sum[used] / judged[used], 0.0)
        x = np.where(mask, kl_sum[used] / measured[used], 0.0)
    correlation, slope = _weighted_within(x, y, mask[None].astype(float))
    if np.isnan(correlation[0]):
        out["note"] = "not estimated: no spread in KL or in the verdicts within a condition"
        return out
    out["correlation"], out["slope"] = float(correlation[0]), float(slope[0])
    r, b = _weighted_within(x, y, mask[None] * draws[:, None, :])
    out["correlation_ci"], out["slope_ci"] = percentile_ci(r), percentile_ci(b)
    return out


def _weighted_within(x: np.ndarray, y: np.ndarray, weights: np.ndarray):
    """Pearson's r and slope of y on x (both [conditions, items]) after taking each
    condition's weighted mean out, for each replicate's weights [replicates, conditions,
    items] (an item's bootstrap count, 0 where it has no point)."""
    total = weights.sum(axis=-1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    dx = x - (weights * x).sum(axis=-1, keepdims=True) / safe
    dy = y - (weights * y).sum(axis=-1, keepdims=True) / safe
    sxy = (weights * dx * dy).sum(axis=(1, 2))
    sxx = (weights * dx * dx).sum(axis=(1, 2))
    syy = (weights * dy * dy).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sxy / np.sqrt(sxx * syy), sxy / sxx


def _empty_condition_level() -> dict:
    return {"points": [], "correlation": None, "correlation_ci": None, "slope": None,
            "slope_ci": None, "note": None}


def _empty_item_level() -> dict:
    return {"n_points": 0, "n_items": 0, "n_conditions": 0, "correlation": None,
            "correlation_ci": None, "slope": None, "slope_ci": None, "note": None}
