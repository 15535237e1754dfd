"""Rater quality and per-criterion agreement for the study report (plain tables, no Django).

*Gold checks*: judgments on pairs whose right answer is known carry ``gold_correct``
(True / False; None elsewhere). *Criterion ratings*: ``judgment, criterion, value_a,
value_b`` — one Likert value for each response of a judgment, in condition order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.agreement import agreement_summary, choice_codes
from analysis.bootstrap import item_bootstrap_counts, percentile_ci
from analysis.contracts import InputError
from analysis.preference import preference_summary

MIN_GOLD_ACCURACY = 0.8


def gold_accuracy(gold: pd.DataFrame) -> dict:
    """Share of gold checks answered right, overall and per rater.

    In: judgments on gold pairs with ``rater`` and ``gold_correct``. Out: ``n``,
    ``correct``, ``accuracy`` (None without checks) and ``per_rater`` rows."""
    if gold.empty:
        return {"n": 0, "correct": 0, "accuracy": None, "per_rater": []}
    correct = gold["gold_correct"].astype(bool)
    per_rater = [
        {"rater": rater, "n": len(group), "accuracy": float(group.mean())}
        for rater, group in correct.groupby(gold["rater"], sort=True)
    ]
    return {
        "n": len(gold),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()),
        "per_rater": per_rater,
    }


def exclusion_effect(
    judgments: pd.DataFrame,
    gold: dict,
    order: Sequence[str],
    *,
    min_accuracy: float = MIN_GOLD_ACCURACY,
    seed: int = 0,
) -> dict:
    """Alpha of the choice and Bradley–Terry ratings with and without the raters whose
    gold accuracy is below `min_accuracy`, so a reader sees whether they move the result.

    Out: ``excluded`` (pseudonyms), ``min_accuracy``, and for ``all`` / ``kept``: ``n``,
    ``alpha`` and ``ratings`` ({condition: rating}); a ``note`` when nothing is excluded."""
    excluded = sorted(r["rater"] for r in gold["per_rater"] if r["accuracy"] < min_accuracy)
    result: dict = {"min_accuracy": min_accuracy, "excluded": excluded, "note": None}
    if not gold["per_rater"]:
        result["note"] = "no gold checks answered"
        return result
    if not excluded:
        result["note"] = f"every rater reached {min_accuracy:.0%} on the gold checks"
        return result
    kept = judgments[~judgments["rater"].isin(excluded)]
    result["all"] = _headline(judgments, order, seed)
    result["kept"] = _headline(kept, order, seed)
    return result


def _headline(judgments: pd.DataFrame, order: Sequence[str], seed: int) -> dict:
    """Point estimates only (no bootstrap): alpha of the choice and BT ratings."""
    out: dict = {"n": len(judgments), "alpha": None, "ratings": {}}
    if judgments.empty:
        return out
    try:
        out["alpha"] = agreement_summary(choice_codes(judgments, order), "nominal", bootstrap=0)[
            "alpha"
        ]
        bt = preference_summary(judgments, bootstrap=0, seed=seed)["bradley_terry"]
    except InputError:
        return out
    out["ratings"] = {row["condition"]: row["rating"] for row in bt["conditions"]}
    return out


def criterion_agreement(
    judgments: pd.DataFrame, ratings: pd.DataFrame, *, bootstrap: int, seed: int
) -> list[dict]:
    """Krippendorff's alpha (ordinal) of each criterion's Likert values.

    A unit is one response within one judged pair (``item: A vs B: condition``), so each
    rater gives it at most one value. Out: per criterion ``alpha``, ``alpha_ci``,
    ``alpha_note``, ``n_units``, ``n_pairable_units``, ``n_ratings``."""
    if ratings.empty or judgments.empty:
        return []
    joined = ratings.merge(
        judgments[["judgment", "item", "rater", "condition_a", "condition_b"]], on="judgment"
    )
    pair = joined["item"] + ": " + joined["condition_a"] + " vs " + joined["condition_b"]
    out = []
    for criterion, group in joined.groupby("criterion", sort=True):
        long = pd.concat(
            [
                pd.DataFrame(
                    {
                        "unit": pair[group.index] + ": " + group[f"condition_{side}"],
                        "rater": group["rater"],
                        "value": group[f"value_{side}"],
                    }
                )
                for side in ("a", "b")
            ],
            ignore_index=True,
        )
        try:
            summary = agreement_summary(long, "ordinal", bootstrap=bootstrap, seed=seed)
        except InputError as error:
            out.append({"criterion": criterion, "alpha": None, "alpha_note": str(error)})
            continue
        keys = ("alpha", "alpha_ci", "alpha_note", "n_units", "n_pairable_units", "n_ratings")
        out.append({"criterion": criterion, **{key: summary[key] for key in keys}})
    return out


def criterion_means(
    judgments: pd.DataFrame, ratings: pd.DataFrame, order: Sequence[str], *,
    bootstrap: int, seed: int,
) -> list[dict]:
    """Each criterion's mean Likert value per condition, on the counted judgments only
    (`judgments` holds no gold check: those feed only the gold accuracy), with a 95 %
    percentile interval from the item-cluster bootstrap (whole items drawn with
    replacement, so one item's ratings by several raters are not taken as independent).

    Out: per criterion and condition (`order`) ``criterion, condition, mean, ci,
    ci_note`` (why there is no interval: under two items, or no spread), ``n`` (ratings)
    and ``n_items``."""
    if ratings.empty or judgments.empty:
        return []
    joined = ratings.merge(
        judgments[["judgment", "item", "condition_a", "condition_b"]], on="judgment"
    )
    long = pd.concat(
        [
            pd.DataFrame({
                "criterion": joined["criterion"], "item": joined["item"],
                "condition": joined[f"condition_{side}"],
                "value": pd.to_numeric(joined[f"value_{side}"], errors="coerce"),
            })
            for side in ("a", "b")
        ],
        ignore_index=True,
    ).dropna(subset=["value"])
    if long.empty:
        return []
    item_codes, items = pd.factorize(long["item"], sort=True)
    draws = item_bootstrap_counts(len(items), bootstrap, seed)
    out = []
    for criterion in sorted(long["criterion"].unique()):
        for condition in order:
            mask = ((long["criterion"] == criterion) & (long["condition"] == condition)).to_numpy()
            if not mask.any():
                continue
            values = long["value"].to_numpy(float)[mask]
            sums = np.bincount(item_codes[mask], values, minlength=len(items))
            counts = np.bincount(item_codes[mask], minlength=len(items))
            n_items = int((counts > 0).sum())
            ci, note = None, None
            if n_items < 2 or not bootstrap:
                note = "fewer than two items" if n_items < 2 else "no bootstrap"
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    ci = percentile_ci((draws @ sums) / (draws @ counts))
                if ci is None or ci[0] == ci[1]:
                    ci, note = None, "every rating the same: no spread to resample"
            out.append({
                "criterion": criterion, "condition": condition, "mean": float(values.mean()),
                "ci": ci, "ci_note": note, "n": int(mask.sum()), "n_items": n_items,
            })
    return out
