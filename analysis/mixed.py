"""Mixed-effects logistic model: do raters prefer the sparser output, and more so (or less)
as the sparsity gap grows?

Plain tables in (no Django): judgments with ``generation_a, generation_b`` and generations
with ``generation, active_fraction``. Fitted by statsmodels' ``BinomialBayesMixedGLM``
(variational Bayes) with random intercepts for rater and item.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

MIN_JUDGMENTS = 10
# Variational Bayes costs O(judgments) per gradient and needs hundreds of gradients: above
# this many judgments the model is fitted on a seeded subsample of whole items.
MAX_JUDGMENTS = 20_000
Z_95 = 1.959963984540054


def sparsity_table(judgments: pd.DataFrame, generations: pd.DataFrame) -> pd.DataFrame:
    """One row per decisive judgment between outputs of different achieved sparsity:
    ``rater, item, sparsity_diff`` (sparser minus denser, 1 − active_fraction) and
    ``sparser_won`` (0 / 1). Ties and pairs of equal sparsity carry no direction and are
    left out."""
    columns = ["rater", "item", "sparsity_diff", "sparser_won"]
    needed = {"generation_a", "generation_b", "winner"}
    if judgments.empty or not needed <= set(judgments.columns) or generations.empty:
        return pd.DataFrame(columns=columns)
    sparsity = 1 - generations.set_index("generation")["active_fraction"].astype(float)
    s_a = judgments["generation_a"].map(sparsity).to_numpy(dtype=float)
    s_b = judgments["generation_b"].map(sparsity).to_numpy(dtype=float)
    winner = judgments["winner"].to_numpy()
    keep = (winner != "tie") & np.isfinite(s_a) & np.isfinite(s_b) & (np.abs(s_a - s_b) > 1e-9)
    a_sparser = s_a > s_b
    return pd.DataFrame(
        {
            "rater": judgments["rater"].astype(str).to_numpy()[keep],
            "item": judgments["item"].astype(str).to_numpy()[keep],
            "sparsity_diff": np.abs(s_a - s_b)[keep],
            "sparser_won": ((winner == "a") == a_sparser)[keep].astype(float),
        },
        columns=columns,
    )


def sparsity_preference_model(
    judgments: pd.DataFrame, generations: pd.DataFrame, *, seed: int = 0
) -> dict:
    """Fit P(sparser output preferred) = logit⁻¹(b0 + b1 · sparsity_diff + u_rater + v_item).

    Out: ``n``, ``fixed`` (per term: posterior mean, SD, 95 % interval mean ± 1.96 SD,
    and for the slope the odds ratio per +0.1 sparsity gap), ``random`` (per grouping:
    the SD, exp of statsmodels' log-SD parameter) and ``note``. Degenerate data (too few
    judgments, one outcome only, no variation in the gap, no grouping with two levels)
    give ``fixed: None`` or an intercept-only fit and a note saying why."""
    data = sparsity_table(judgments, generations)
    result: dict = {"n": len(data), "fixed": None, "random": None, "note": None}
    notes = []
    if len(data) > MAX_JUDGMENTS:
        data = item_subsample(data, MAX_JUDGMENTS, seed)
        notes.append(
            f"fitted on {len(data)} of {result['n']} judgments: all judgments of "
            f"{data['item'].nunique()} randomly drawn items (seed {seed}), to bound the fit time"
        )
        result["n"] = len(data)
    if len(data) < MIN_JUDGMENTS:
        result["note"] = (
            f"not fitted: {len(data)} decisive judgments between outputs of different "
            f"sparsity, at least {MIN_JUDGMENTS} needed"
        )
        return result
    outcomes = data["sparser_won"].unique()
    if len(outcomes) == 1:
        who = "sparser" if outcomes[0] == 1 else "denser"
        result["note"] = f"not fitted: the {who} output won every decisive judgment (separation)"
        return result
    groups = {name: f"0 + C({name})" for name in ("rater", "item") if data[name].nunique() >= 2}
    if not groups:
        result["note"] = "not fitted: needs at least two raters or two items for random effects"
        return result
    varies = np.ptp(data["sparsity_diff"].to_numpy()) > 1e-9
    formula = "sparser_won ~ sparsity_diff" if varies else "sparser_won ~ 1"
    if not varies:
        notes.append("the sparsity gap does not vary, so only the intercept is estimated")
    missing = sorted({"rater", "item"} - set(groups))
    if missing:
        notes.append(f"no random effect for {', '.join(missing)} (a single level)")
    model = BinomialBayesMixedGLM.from_formula(formula, groups, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # fit_vb draws random starting values: seeded, so a report is reproducible.
        fit = model.fit_vb(fit_method="L-BFGS-B", rng=np.random.default_rng(seed))
    result["fixed"] = [
        _fixed(name, float(mean), float(sd))
        for name, mean, sd in zip(model.exog_names, fit.fe_mean, fit.fe_sd, strict=True)
    ]
    result["random"] = [
        {"group": name, "sd": math.exp(float(log_sd)), "log_sd": float(log_sd)}
        for name, log_sd in zip(model.vcp_names, fit.vcp_mean, strict=True)
    ]
    result["note"] = "; ".join(notes) or None
    return result


def item_subsample(data: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """Whole items in a seeded random order, as many as fit in `limit` judgments (an item's
    judgments stay together, so the item random effect still sees its cluster)."""
    items = data["item"].unique()
    order = np.random.default_rng(seed).permutation(len(items))
    sizes = data.groupby("item").size().reindex(items[order]).to_numpy()
    keep = items[order][np.cumsum(sizes) <= limit]
    return data[data["item"].isin(keep)].reset_index(drop=True)


def _fixed(name: str, mean: float, sd: float) -> dict:
    row = {
        "term": name,
        "mean": mean,
        "sd": sd,
        "ci": [mean - Z_95 * sd, mean + Z_95 * sd],
    }
    if name == "sparsity_diff":
        row["odds_ratio_per_0_1"] = math.exp(0.1 * mean)
    return row
