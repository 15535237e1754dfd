"""Do raters disagree about sparsity? Each rater's direction of preference and a test of
whether the raters share one (plain tables, no Django; see `analysis.mixed`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency

from analysis.mixed import sparsity_table
from analysis.preference import wilson_interval

MIN_PER_RATER = 5


def rater_directions(judgments: pd.DataFrame, generations: pd.DataFrame) -> dict:
    """Per rater, how often the sparser output won their decisive judgments between outputs
    of different sparsity (with a Wilson CI), and a chi-square test of homogeneity across
    the raters with at least `MIN_PER_RATER` such judgments (H0: every rater prefers the
    sparser output equally often).

    Out: ``per_rater`` rows (``rater, n, sparser_won, share, share_ci``), ``test``
    (``chi2, dof, p_value, n_raters``) or None, and ``note`` saying why there is no test."""
    data = sparsity_table(judgments, generations)
    per_rater = []
    for rater, group in data.groupby("rater", sort=True):
        won = int(group["sparser_won"].sum())
        per_rater.append(
            {
                "rater": rater,
                "n": len(group),
                "sparser_won": won,
                "share": won / len(group),
                "share_ci": wilson_interval(won, len(group)),
            }
        )
    result: dict = {"per_rater": per_rater, "test": None, "note": None}
    tested = [r for r in per_rater if r["n"] >= MIN_PER_RATER]
    if len(tested) < 2:
        result["note"] = (
            f"needs two raters with at least {MIN_PER_RATER} decisive judgments between "
            f"outputs of different sparsity; {len(tested)} have"
        )
        return result
    table = np.array([[r["sparser_won"], r["n"] - r["sparser_won"]] for r in tested])
    if (table.sum(axis=0) == 0).any():
        result["note"] = "every tested judgment went the same way: nothing to compare"
        return result
    chi2, p_value, dof, _ = chi2_contingency(table, correction=False)
    result["test"] = {
        "chi2": float(chi2),
        "dof": int(dof),
        "p_value": float(p_value),
        "n_raters": len(tested),
    }
    return result
