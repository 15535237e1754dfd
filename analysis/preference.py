"""Pairwise preference between conditions from a long-format judgments table.

In: ``item, rater, condition_a, condition_b, winner`` (``a`` / ``b`` / ``tie``), optional
``side_a`` (``left`` / ``right``). Every judgment is first put in a fixed condition order
(sorted names), so "a" means the same condition for every rater and never a screen side.

Out of `preference_summary`: per condition pair win / tie / loss counts, win rates with
ties as half and ties excluded, Wilson and two-way (item × rater) cluster-robust CIs, sign
tests and item × rater cluster tests with Holm correction; Bradley–Terry ratings with
item × rater cluster sandwich CIs and Chatbot-Arena-style ranks;
Davidson's tie model (`analysis.ties`); optionally Bradley–Terry with style covariates
(`analysis.style`); online Elo for comparison; a position-bias test when sides are known.
"""

from collections.abc import Sequence

import choix
import numpy as np
import pandas as pd
from scipy.stats import binomtest, norm
from scipy.stats import t as student_t
from statsmodels.stats.proportion import proportion_confint

from analysis.bootstrap import CI_LEVEL, item_bootstrap_counts
from analysis.choice_model import RATING_CENTRE, RATING_SCALE, to_rating
from analysis.contracts import canonical_judgments, validate_judgments
from analysis.style import style_controlled_bt, style_covariates
from analysis.ties import davidson_summary

ELO_K = 4
ELO_BASE = 10.0
ELO_SCALE = RATING_SCALE
ELO_INITIAL = RATING_CENTRE


def wilson_interval(successes: float, n: int) -> list[float] | None:
    """Wilson score 95 % interval for `successes` out of `n` (None when n is 0).

    A fractional `successes` (ties counted as half) is allowed."""
    if n == 0:
        return None
    low, high = proportion_confint(successes, n, alpha=1 - CI_LEVEL, method="wilson")
    # The bounds are exactly 0 and 1 there; statsmodels' arithmetic leaves 5.6e-17 or
    # 0.9999999999999999, an upper bound below its own estimate of 1.
    return [0.0 if successes == 0 else float(low), 1.0 if successes == n else float(high)]


def sign_test(wins: int, losses: int) -> float | None:
    """Two-sided exact binomial (sign) test of wins = losses, ties left out (None if no
    decisive judgment)."""
    if wins + losses == 0:
        return None
    return float(binomtest(wins, wins + losses, 0.5).pvalue)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values; None entries (no test) stay None and are not counted.
    (statsmodels' `multipletests` gives the same but runs `gc.collect()` on every call:
    0.13 s in a web process, with Django's objects to scan.)"""
    tested = [i for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    if tested:
        p = np.array([p_values[i] for i in tested], dtype=float)
        order = np.argsort(p, kind="stable")
        # The k-th smallest times (m − k + 1), never below an earlier one, at most 1.
        stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
        corrected = np.empty_like(p)
        corrected[order] = np.minimum(stepped, 1.0)
        for i, value in zip(tested, corrected, strict=True):
            adjusted[i] = float(value)
    return adjusted


def win_contributions(judgments: pd.DataFrame, index: dict[str, int]) -> np.ndarray:
    """Each judgment's wins: ``[k, i, j]`` = how much judgment k counts as i beating j.

    A decisive judgment adds 1 to winner-over-loser, a tie ½ each way (Chatbot Arena's
    convention). Summed over k this is the win matrix Bradley–Terry reads; weighted by
    bootstrap multiplicities it is a replicate's. In: canonical judgments, condition →
    index. Out: float [n_judgments, C, C]."""
    n = len(index)
    a = judgments["condition_a"].map(index).to_numpy()
    b = judgments["condition_b"].map(index).to_numpy()
    score_a = judgments["winner"].map({"a": 1.0, "tie": 0.5, "b": 0.0}).to_numpy()
    wins = np.zeros((len(judgments), n, n))
    rows = np.arange(len(judgments))
    wins[rows, a, b] = score_a
    wins[rows, b, a] = 1 - score_a
    return wins


def bradley_terry(wins: np.ndarray, alpha: float) -> np.ndarray:
    """Bradley–Terry log-strengths (mean 0) of a win matrix, by choix's ILSR.

    ``choix.ilsr_pairwise_dense`` is ``ilsr_pairwise`` on counts, and it accepts the ½ of a
    tie directly. `alpha` > 0 regularises, so a condition that never lost or a disconnected
    comparison graph still gives finite strengths."""
    strengths = choix.ilsr_pairwise_dense(wins, alpha=alpha, max_iter=1000)
    return strengths - strengths.mean()


def elo_ratings(judgments: pd.DataFrame) -> dict[str, float]:
    """Online Elo over the judgments in row order, as Chatbot Arena's ``compute_elo``:
    K = 4, base 10, scale 400, every condition starts at 1000, a tie scores ½.

    Elo depends on the order of the rows; it is reported only for comparison with BT."""
    ratings: dict[str, float] = {}
    score_a = {"a": 1.0, "b": 0.0, "tie": 0.5}
    for a, b, winner in judgments[["condition_a", "condition_b", "winner"]].itertuples(index=False):
        rating_a, rating_b = ratings.get(a, ELO_INITIAL), ratings.get(b, ELO_INITIAL)
        expected_a = 1 / (1 + ELO_BASE ** ((rating_b - rating_a) / ELO_SCALE))
        ratings[a] = rating_a + ELO_K * (score_a[winner] - expected_a)
        ratings[b] = rating_b + ELO_K * ((1 - score_a[winner]) - (1 - expected_a))
    return ratings


def arena_ranks(lower: Sequence[float], upper: Sequence[float]) -> list[int]:
    """Rank = 1 + number of conditions whose CI lower bound exceeds this one's upper bound
    (Chatbot Arena), so conditions with overlapping CIs can share a rank."""
    return [1 + int(sum(low > up for low in lower)) for up in upper]


def preference_summary(
    df: pd.DataFrame,
    *,
    bootstrap: int = 1000,
    seed: int = 0,
    bt_alpha: float = 0.01,
    controls: Sequence[str] = (),
    focus: str | None = None,
) -> dict:
    """All preference statistics of a judgments table (see the module docstring).

    `bootstrap` replicates resample items with replacement (every judgment of a drawn item
    comes along, so raters judging the same item are not treated as independent), seeded
    with `seed`, for the tie and style models' CIs; `bt_alpha` is choix's regularisation.
    `controls` (`analysis.style.CONTROLS`) adds the style-controlled model, read from the
    columns ``CONTROL_a`` / ``CONTROL_b``; `focus` names the condition its plain sentence is
    about. Out: a JSON-ready dict with ``n_judgments``, ``n_items``, ``n_raters``,
    ``conditions``, ``pairs``, ``bradley_terry``, ``ties_model`` (Davidson),
    ``style_control`` (None without `controls`), ``elo`` and ``position_bias`` (None when
    ``side_a`` is absent).

    Raises `analysis.contracts.InputError` for a malformed table."""
    validated = validate_judgments(df)
    covariates = style_covariates(df, controls) if controls else None
    judgments, item_codes, items, draws = _resampled(validated, bootstrap, seed)
    conditions = sorted(set(judgments["condition_a"]) | set(judgments["condition_b"]))
    index = {name: i for i, name in enumerate(conditions)}
    elo = elo_ratings(judgments)
    return {
        "n_judgments": len(judgments),
        "n_items": len(items),
        "n_raters": int(judgments["rater"].nunique()),
        "conditions": conditions,
        "ci_level": CI_LEVEL,
        "bootstrap": bootstrap,
        "seed": seed,
        "pairs": _pairs(judgments, item_codes, len(items)),
        "bradley_terry": _bradley_terry(judgments, index, bt_alpha),
        "ties_model": davidson_summary(judgments, conditions, item_codes, draws),
        "style_control": None
        if covariates is None
        else style_controlled_bt(
            judgments,
            _flipped(covariates, validated, judgments),
            conditions,
            item_codes,
            draws,
            focus=focus,
        ),
        "elo": [
            {"condition": name, "rating": elo[name]}
            for name in sorted(conditions, key=lambda name: -elo[name])
        ],
        "position_bias": position_bias(judgments),
    }


def pair_table(df: pd.DataFrame) -> list[dict]:
    """`preference_summary`'s ``pairs`` alone (the same numbers; none is resampled): wins,
    ties and losses, win rates with their intervals and the Holm-adjusted tests per
    condition pair, without the models, which take seconds. For a page that shows the win
    rates.

    Raises `analysis.contracts.InputError` for a malformed table."""
    judgments = canonical_judgments(validate_judgments(df))
    item_codes, items = pd.factorize(judgments["item"], sort=True)
    return _pairs(judgments, item_codes, len(items))


def bt_table(df: pd.DataFrame, *, bt_alpha: float = 0.01) -> dict:
    """`preference_summary`'s ``bradley_terry`` alone (the same numbers for the same
    `bt_alpha`), without the tie and style models.

    Raises `analysis.contracts.InputError` for a malformed table."""
    judgments = canonical_judgments(validate_judgments(df))
    conditions = sorted(set(judgments["condition_a"]) | set(judgments["condition_b"]))
    return _bradley_terry(judgments, {name: i for i, name in enumerate(conditions)}, bt_alpha)


def oriented_pairs(pairs: list[dict], order: Sequence[str]) -> list[dict]:
    """`pair_table` / `preference_summary` rows with the condition earlier in ``order`` (the
    study's, dense first) as A, so every table of a report reads a comparison the same way
    round (the rows come with A and B in alphabetical order). A flipped row swaps wins and
    losses and mirrors its win rates and intervals; its tests are symmetric and unchanged."""
    rank = {name: i for i, name in enumerate(order)}
    flipped_rows = []
    for row in pairs:
        a, b = row["condition_a"], row["condition_b"]
        if rank.get(a, len(rank)) <= rank.get(b, len(rank)):
            flipped_rows.append(row)
            continue
        flipped = {**row, "condition_a": b, "condition_b": a}
        flipped["wins"], flipped["losses"] = row["losses"], row["wins"]
        for key in ("win_rate_ties_half", "win_rate_ties_excluded"):
            if row[key] is not None:
                flipped[key] = 1.0 - row[key]
        for key in (
            "win_rate_ties_half_ci_wilson",
            "win_rate_ties_half_ci_cluster",
            "win_rate_ties_excluded_ci_wilson",
        ):
            if row[key] is not None:
                low, high = row[key]
                flipped[key] = [1.0 - high, 1.0 - low]
        flipped_rows.append(flipped)
    return flipped_rows


def _resampled(
    validated: pd.DataFrame, bootstrap: int, seed: int
) -> tuple[pd.DataFrame, np.ndarray, pd.Index, np.ndarray]:
    """The judgments in canonical order, each one's item code, the items, and the item
    bootstrap's draws (`item_bootstrap_counts`)."""
    judgments = canonical_judgments(validated)
    item_codes, items = pd.factorize(judgments["item"], sort=True)
    return judgments, item_codes, items, item_bootstrap_counts(len(items), bootstrap, seed)


def _flipped(
    covariates: pd.DataFrame, validated: pd.DataFrame, judgments: pd.DataFrame
) -> pd.DataFrame:
    """Style differences a − b after `canonical_judgments` swapped some pairs' sides."""
    swapped = (validated["condition_a"] != judgments["condition_a"]).to_numpy()
    return covariates.mul(np.where(swapped, -1.0, 1.0), axis=0)


def _pairs(judgments: pd.DataFrame, item_codes: np.ndarray, n_items: int) -> list[dict]:
    rows = []
    score_a = judgments["winner"].map({"a": 1.0, "tie": 0.5, "b": 0.0}).to_numpy()
    rater_codes, raters = pd.factorize(judgments["rater"], sort=True)
    grouped = judgments.assign(position=np.arange(len(judgments))).groupby(
        ["condition_a", "condition_b"], sort=True
    )
    for (condition_a, condition_b), pair in grouped:
        counts = pair["winner"].value_counts()
        wins, ties, losses = (int(counts.get(w, 0)) for w in ("a", "tie", "b"))
        n = wins + ties + losses
        positions = pair["position"].to_numpy()
        codes = item_codes[positions]
        score_by_item = np.bincount(codes, score_a[positions], minlength=n_items)
        judgments_by_item = np.bincount(codes, minlength=n_items)
        by_rater, by_cell = _rater_sums(codes, rater_codes[positions], score_a[positions],
                                        len(raters))
        clusters = {"raters": by_rater, "cells": by_cell}
        interval = cluster_interval(score_by_item, judgments_by_item, **clusters)
        rows.append(
            {
                "condition_a": condition_a,
                "condition_b": condition_b,
                "n": n,
                "n_items": int(pair["item"].nunique()),
                "n_raters": int(pair["rater"].nunique()),
                "wins": wins,
                "ties": ties,
                "losses": losses,
                "win_rate_ties_half": (wins + ties / 2) / n,
                "win_rate_ties_half_ci_wilson": wilson_interval(wins + ties / 2, n),
                "win_rate_ties_half_ci_cluster": interval,
                "win_rate_ties_half_ci_note": None if interval else (
                    "none: judged on one item" if pair["item"].nunique() < 2
                    else "none: every item's verdicts gave the same rate"),
                "win_rate_ties_excluded": wins / (wins + losses) if wins + losses else None,
                "win_rate_ties_excluded_ci_wilson": wilson_interval(wins, wins + losses),
                "p_sign_test": sign_test(wins, losses),
                "p_cluster": _cluster_p(score_by_item, judgments_by_item, **clusters),
                "win_rate_detectable": cluster_detectable(
                    score_by_item, judgments_by_item, **clusters),
            }
        )
    for row, adjusted in zip(rows, holm([r["p_sign_test"] for r in rows]), strict=True):
        row["p_holm"] = adjusted
    for row, adjusted in zip(rows, holm([r["p_cluster"] for r in rows]), strict=True):
        row["p_cluster_holm"] = adjusted
    return rows


def _rater_sums(item_codes: np.ndarray, rater_codes: np.ndarray, scores: np.ndarray,
                n_raters: int) -> tuple[tuple | None, tuple | None]:
    """Summed scores and judgments per rater and per (item, rater) cell of one pair's
    judgments, for `rater_variance`; (None, None) when one rater judged them all."""
    judged = np.unique(rater_codes)
    if len(judged) < 2:
        return None, None
    by_rater = (np.bincount(rater_codes, scores, minlength=n_raters)[judged],
                np.bincount(rater_codes, minlength=n_raters)[judged])
    cell_codes, _ = pd.factorize(item_codes * n_raters + rater_codes)
    by_cell = (np.bincount(cell_codes, scores), np.bincount(cell_codes))
    return by_rater, by_cell


def _cluster_p(score_by_item: np.ndarray, judgments_by_item: np.ndarray,
               raters: tuple, cells: tuple) -> float | None:
    judged = judgments_by_item > 0
    p = cluster_test(score_by_item[judged], judgments_by_item[judged], raters=raters, cells=cells)
    return None if np.isnan(p) else float(p)


def _cluster_variance(scores: np.ndarray, counts: np.ndarray, centre) -> np.ndarray:
    """One-way cluster-robust variance of Σ scores / Σ counts with the clusters on the last
    axis: G/(G−1) · Σ_g (s_g − centre · n_g)² / (Σ n)², G the clusters judged at all (CR1).
    0 where fewer than 2 clusters."""
    judged = (counts > 0).sum(axis=-1)
    total = counts.sum(axis=-1)
    residual = scores - np.expand_dims(centre, -1) * counts
    factor = np.where(judged > 1, judged / np.maximum(judged - 1, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return factor * (residual**2).sum(axis=-1) / total**2


def rater_variance(scores: np.ndarray, counts: np.ndarray, raters: tuple | None,
                   cells: tuple | None) -> np.ndarray:
    """What raters add to the win rate's variance beyond the item clusters: the two-way
    (item × rater) cluster-robust variance of Cameron, Gelbach & Miller (2011) is
    V_item + V_rater − V_item∩rater; its rater part V_rater − V_cell (both centred on the
    estimate) is kept where positive, so the two-way variance is never below the items'.

    In: per item summed scores and judgments (last axis), `raters` and `cells` the same per
    rater and per (item, rater) cell, or None (one rater, or raters unknown: 0). Leading
    axes are separate data sets."""
    if raters is None or cells is None:
        return np.zeros(np.shape(scores)[:-1])
    estimate = np.asarray(scores, float).sum(axis=-1) / np.asarray(counts, float).sum(axis=-1)
    rater_part = _cluster_variance(*(np.asarray(x, float) for x in raters), estimate)
    cell_part = _cluster_variance(*(np.asarray(x, float) for x in cells), estimate)
    return np.maximum(np.nan_to_num(rater_part - cell_part), 0.0)


def cluster_interval(scores: np.ndarray, counts: np.ndarray, *, raters: tuple | None = None,
                     cells: tuple | None = None) -> list[float] | None:
    """95 % interval of the win rate (ties ½) with items and raters as clusters: the
    estimate ± t_{0.975, items − 1} · √(V_item + `rater_variance`), V_item centred on the
    estimate, clipped to [0, 1]. None under 2 judged items or without width (every item's
    verdicts at the same rate, e.g. all ties): no width is not certainty.

    In: 1-D per item summed scores and judgments; `raters`, `cells` as `rater_variance`."""
    scores, counts = np.asarray(scores, float), np.asarray(counts, float)
    judged = counts > 0
    items = int(judged.sum())
    if items < 2:
        return None
    estimate = scores.sum() / counts.sum()
    variance = _cluster_variance(scores[judged], counts[judged], estimate)
    variance += rater_variance(scores[judged], counts[judged], raters, cells)
    if not variance > 1e-15:
        return None
    half = float(student_t.ppf(0.975, items - 1) * np.sqrt(variance))
    return [max(0.0, float(estimate) - half), min(1.0, float(estimate) + half)]


def cluster_detectable(scores: np.ndarray, counts: np.ndarray, *, raters: tuple | None = None,
                       cells: tuple | None = None) -> float | None:
    """The smallest shift of the win rate from ½ that `cluster_test` finds with 80 % power
    at the 5 % level, by the normal approximation at its observed standard error:
    (t_{0.975, items − 1} + z_{0.8}) · SE. None under 2 judged items, or when the
    standard error is 0 (every item's verdicts balanced exactly: nothing to scale by)."""
    judged = np.asarray(counts) > 0
    scores, counts = np.asarray(scores, float)[judged], np.asarray(counts, float)[judged]
    items = len(counts)
    if items < 2:
        return None
    se = float(np.sqrt(_null_variance(scores, counts, raters, cells)))
    if se == 0:
        return None
    return float((student_t.ppf(0.975, items - 1) + norm.ppf(0.8)) * se)


def _null_variance(scores, counts, raters, cells) -> np.ndarray:
    """The test's variance: the items' centred on the null (½), which never vanishes, plus
    the raters' part centred on the estimate (`rater_variance`; centred on ½ with a few
    raters it would bound the t statistic, below √2 with 3 raters)."""
    items = np.asarray(counts).shape[-1]
    residual = scores - 0.5 * counts
    total = counts.sum(axis=-1)
    item_part = items / (items - 1) * (residual**2).sum(axis=-1) / total**2
    return item_part + rater_variance(scores, counts, raters, cells)


def cluster_test(scores: np.ndarray, counts: np.ndarray, *, raters: tuple | None = None,
                 cells: tuple | None = None) -> np.ndarray:
    """Two-sided test of win rate (ties ½) = 0.5 with items and raters as clusters: the
    estimate Σ scores / Σ counts against its standard error (`_null_variance`: the items'
    cluster-robust variance under the null, CR1, plus what raters add,
    `rater_variance`), referred to Student's t with items − 1 degrees of freedom. Neither
    the raters of one item nor the verdicts of one rater are taken as independent (the
    sign test takes them so). Centred on the null, the error never vanishes: two items won
    outright give p = 0.5, as the sign test on two verdicts.

    In: per item (last axis) the summed score and the number of judgments; `raters` and
    `cells` the same per rater and per (item, rater) cell (None: items only); leading axes
    are separate data sets (e.g. simulated studies). Out: p-values (NaN under 2 items)."""
    scores, counts = np.asarray(scores, float), np.asarray(counts, float)
    items = counts.shape[-1]
    if items < 2:
        return np.full(scores.shape[:-1], np.nan)
    total = counts.sum(axis=-1)
    se = np.sqrt(_null_variance(scores, counts, raters, cells))
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, (scores.sum(axis=-1) / total - 0.5) / se, 0.0)
    return 2 * student_t.sf(np.abs(t), items - 1)


def _bradley_terry(judgments: pd.DataFrame, index: dict[str, int], alpha: float) -> dict:
    contributions = win_contributions(judgments, index)
    strengths = bradley_terry(contributions.sum(axis=0), alpha)
    ratings = to_rating(strengths)
    half_widths = bt_half_widths(judgments, index, strengths)
    cis = [None if not width > 0 else [float(r - width), float(r + width)]
           for r, width in zip(ratings, to_rating(half_widths) - RATING_CENTRE, strict=True)]
    lower = [ci[0] if ci else r for ci, r in zip(cis, ratings, strict=True)]
    upper = [ci[1] if ci else r for ci, r in zip(cis, ratings, strict=True)]
    ranks = arena_ranks(lower, upper)
    table = [
        {
            "condition": name,
            "rating": float(ratings[i]),
            "rating_ci": cis[i],
            "log_strength": float(strengths[i]),
            "rank": ranks[i],
        }
        for name, i in index.items()
    ]
    return {
        "alpha": alpha,
        "scale": "rating = 1000 + 400 * log_strength / ln(10); log strengths have mean 0",
        "conditions": sorted(table, key=lambda row: (row["rank"], -row["rating"])),
    }


def bt_half_widths(judgments: pd.DataFrame, index: dict[str, int],
                   strengths: np.ndarray) -> np.ndarray:
    """Half-widths of 95 % intervals of the mean-zero BT log-strengths, items and raters as
    clusters: Chatbot Arena's sandwich H⁺ B H⁺ (H the Fisher information Σ p(1 − p) x xᵀ,
    x = e_a − e_b; H⁺ its pseudo-inverse, the strengths being centred) with the meat B the
    two-way cluster-robust one, B_item + (B_rater − B_cell)₊ (each Σ_g s_g s_gᵀ · G/(G − 1)
    of the clusters' summed scores s_g = Σ (y − p) x; the rater part clipped to its positive
    eigenvalues, as `rater_variance`), times Student's t with items − 1 df. 0 where there is
    no width (every verdict a tie, say), NaN under 2 items.

    In: canonical judgments, condition → index, the fitted log-strengths. Out: float [C]."""
    n = len(index)
    a = judgments["condition_a"].map(index).to_numpy()
    b = judgments["condition_b"].map(index).to_numpy()
    outcome = judgments["winner"].map({"a": 1.0, "tie": 0.5, "b": 0.0}).to_numpy()
    items = judgments["item"].nunique()
    if items < 2:
        return np.full(n, np.nan)
    chance = 1 / (1 + np.exp(strengths[b] - strengths[a]))
    design = np.zeros((len(judgments), n))
    design[np.arange(len(judgments)), a] = 1.0
    design[np.arange(len(judgments)), b] = -1.0
    scores = design * (outcome - chance)[:, None]
    # H is singular along (1, …, 1), where the centred strengths do not move; a loose cut-off
    # keeps that rounding-error eigenvalue (1e-13) from being inverted.
    bread = np.linalg.pinv((design * (chance * (1 - chance))[:, None]).T @ design,
                           rcond=1e-10, hermitian=True)
    meat = _cluster_meat(scores, judgments["item"])
    if judgments["rater"].nunique() > 1:
        cells = judgments["item"].astype(str) + "\x1f" + judgments["rater"].astype(str)
        values, vectors = np.linalg.eigh(
            _cluster_meat(scores, judgments["rater"]) - _cluster_meat(scores, cells))
        meat += (vectors * np.maximum(values, 0.0)) @ vectors.T
    variance = np.clip(np.diag(bread @ meat @ bread), 0.0, None)
    return student_t.ppf(0.975, items - 1) * np.sqrt(variance)


def _cluster_meat(scores: np.ndarray, clusters: pd.Series) -> np.ndarray:
    """G/(G − 1) · Σ_g s_g s_gᵀ over the clusters' summed score vectors (0 under 2)."""
    codes, names = pd.factorize(clusters)
    if len(names) < 2:
        return np.zeros((scores.shape[1], scores.shape[1]))
    sums = np.zeros((len(names), scores.shape[1]))
    np.add.at(sums, codes, scores)
    return len(names) / (len(names) - 1) * sums.T @ sums


def position_bias(judgments: pd.DataFrame) -> dict | None:
    """Test P(left output chosen) = 0.5 on decisive judgments whose side is known.

    In: judgments with ``side_a``. Out: ``overall`` and ``per_rater`` (each with
    ``n_decisive``, ``n_left``, ``left_rate``, Wilson ``left_rate_ci``, two-sided binomial
    ``p_value``; per rater also Holm-adjusted ``p_holm``), or None without ``side_a``."""
    if "side_a" not in judgments.columns:
        return None
    known = judgments[judgments["side_a"].notna() & (judgments["winner"] != "tie")]
    left = ((known["winner"] == "a") & (known["side_a"] == "left")) | (
        (known["winner"] == "b") & (known["side_a"] == "right")
    )
    per_rater = [
        {"rater": rater, **_left_test(group)}
        for rater, group in left.groupby(known["rater"], sort=True)
    ]
    for row, adjusted in zip(per_rater, holm([r["p_value"] for r in per_rater]), strict=True):
        row["p_holm"] = adjusted
    return {"overall": _left_test(left), "per_rater": per_rater}


def _left_test(left: pd.Series) -> dict:
    n, n_left = len(left), int(left.sum())
    return {
        "n_decisive": n,
        "n_left": n_left,
        "left_rate": n_left / n if n else None,
        "left_rate_ci": wilson_interval(n_left, n),
        "p_value": sign_test(n_left, n - n_left),
    }
