"""An LLM judge measured against the humans (issue 31), from plain tables.

In: the humans' counted judgments (``item, rater, condition_a, condition_b, winner``, gold
checks already left out) and the judge's verdicts (``judge, item, condition_a,
condition_b, order, winner``: ``order`` ``ab`` when condition_a was shown first, ``ba``
when condition_b was; ``winner`` ``a`` / ``b`` / ``tie`` in condition order, None when the
judge's answer had no verdict). The verdicts are never pooled with the humans' judgments:
each judge is compared with them.

Per judge (`judge_section`):

- agreement per condition pair and overall: each human verdict against the judge's
  verdict on the same pair (its two orders combined, `combined_verdicts`), Cohen's kappa
  and raw agreement over the three choices (first condition better, tie, second better),
  with 95 % percentile intervals from the item-cluster bootstrap the report uses;
- position bias: how often a decisive verdict picks the response shown first (the report's
  exact binomial test), and what the two orders of one pair gave;
- the judge's Bradley–Terry ratings and per-pair win rates by the report's own code
  (`preference_summary`, each order one verdict, unparseable ones left out);
- whether the judge separates the condition pairs the humans separate: the report's
  item-cluster t test, Holm across pairs, at the 5 % level, for both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from analysis.agreement import choice_code
from analysis.bootstrap import item_bootstrap_counts, percentile_ci
from analysis.contracts import InputError
from analysis.paired import ALPHA
from analysis.preference import oriented_pairs, position_bias, preference_summary

VERDICT_COLUMNS = ["judge", "item", "condition_a", "condition_b", "order", "winner"]
CHOICES = 3  # choice codes: 0 first condition better, 1 tie, 2 second better
_SCORE = {"a": 1.0, "tie": 0.5, "b": 0.0}
WEAK_JUDGE = (
    "This judge is the shipped SmolLM2-135M-Instruct, a weak judge: a 135-million-parameter "
    "model, far below the judges whose agreement with humans is published (GPT-4-class "
    "models agree with human raters about 80 % of the time on MT-Bench). Its verdicts show "
    "that the judging pipeline works, not how good the outputs are; point the judge at a "
    "strong model for a pilot worth planning on."
)


def cohen_kappa(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa of confusion matrices [..., C, C] (rows one rater's category, columns
    the other's): (p_o − p_e) / (1 − p_e) with p_e from the two marginals. NaN where
    undefined (no pairs, or both raters always in one and the same category)."""
    confusion = np.asarray(confusion, dtype=float)
    n = confusion.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(confusion, axis1=-2, axis2=-1) / n
        chance = (confusion.sum(axis=-1) * confusion.sum(axis=-2)).sum(axis=-1) / n**2
        kappa = (observed - chance) / (1 - chance)
    return np.where((n > 0) & (chance < 1 - 1e-12), kappa, np.nan)


def combined_verdicts(verdicts: pd.DataFrame) -> pd.DataFrame:
    """One verdict per judge, item and condition pair from its two orders: the mean of
    their scores (a = 1, tie = ½, b = 0), a above ½, b below, a tie at ½ (so two orders
    that disagree cancel to a tie, as Arena-Hard-Auto scores them). An order without a
    verdict is left out; a pair with none in either order has no verdict and is dropped.
    Out: ``judge, item, condition_a, condition_b, winner, orders`` (orders that answered)."""
    answered = verdicts[verdicts["winner"].notna()]
    if answered.empty:
        return pd.DataFrame(columns=[*VERDICT_COLUMNS[:4], "winner", "orders"])
    keys = ["judge", "item", "condition_a", "condition_b"]
    mean = answered.assign(score=answered["winner"].map(_SCORE)).groupby(
        keys, sort=True
    )["score"].agg(["mean", "size"]).reset_index()
    winner = np.select([mean["mean"] > 0.5, mean["mean"] < 0.5], ["a", "b"], "tie")
    return mean[keys].assign(winner=winner, orders=mean["size"].to_numpy())


def judge_section(
    humans: pd.DataFrame,
    verdicts: pd.DataFrame,
    order: Sequence[str],
    *,
    human_pairs: Sequence[dict] | None,
    bootstrap: int,
    seed: int,
    weak: Collection[str] = (),
) -> dict:
    """The report's judge-against-human section (see the module docstring).

    In: the humans' counted judgments, the judges' verdicts (`VERDICT_COLUMNS`), the
    study's condition order, the humans' oriented pair rows (`preference_summary`'s
    ``pairs`` after `oriented_pairs`, None without judgments) so the separation compares
    the report's own human tests, and the judges known to be the shipped 135M model
    (`weak`: their entry carries `WEAK_JUDGE`). Out: ``judges`` (one entry per judge)
    and ``note``."""
    if verdicts.empty:
        return {"judges": [], "note": "no LLM judge has judged this study"}
    judges = [
        {
            **_one_judge(name, humans, group, order, human_pairs or [], bootstrap, seed),
            "weak_note": WEAK_JUDGE if name in weak else None,
        }
        for name, group in verdicts.groupby("judge", sort=True)
    ]
    return {"judges": judges, "note": None}


def _one_judge(
    name: str,
    humans: pd.DataFrame,
    verdicts: pd.DataFrame,
    order: Sequence[str],
    human_pairs: Sequence[dict],
    bootstrap: int,
    seed: int,
) -> dict:
    answered = verdicts[verdicts["winner"].notna()]
    table = _as_judgments(answered)
    ratings, pairs, note = None, [], None
    if table.empty:
        note = "the judge gave no verdict that could be read"
    else:
        try:
            summary = preference_summary(table, bootstrap=bootstrap, seed=seed)
            ratings = summary["bradley_terry"]
            pairs = oriented_pairs(summary["pairs"], order)
        except InputError as error:
            note = str(error)
    return {
        "judge": name,
        "verdicts": len(verdicts),
        "unparseable": int(verdicts["winner"].isna().sum()),
        "agreement": agreement_with_humans(
            humans, combined_verdicts(verdicts), order, bootstrap=bootstrap, seed=seed
        ),
        "position_bias": judge_position_bias(verdicts, order),
        "bradley_terry": ratings,
        "pairs": pairs,
        "separation": separation(human_pairs, pairs),
        "note": note,
    }


def _as_judgments(answered: pd.DataFrame) -> pd.DataFrame:
    """The judge's answered verdicts as a judgments table (each order one judgment, rater
    the judge), with ``side_a`` ``left`` where condition_a was shown first."""
    return pd.DataFrame({
        "item": answered["item"].to_numpy(),
        "rater": answered["judge"].to_numpy(),
        "condition_a": answered["condition_a"].to_numpy(),
        "condition_b": answered["condition_b"].to_numpy(),
        "winner": answered["winner"].to_numpy(),
        "side_a": np.where(answered["order"].to_numpy() == "ab", "left", "right"),
    })


def agreement_with_humans(
    humans: pd.DataFrame, judged: pd.DataFrame, order: Sequence[str], *, bootstrap: int,
    seed: int,
) -> dict:
    """Cohen's kappa and raw agreement of each human verdict with the judge's verdict on the
    same item and condition pair (`combined_verdicts`), coded in the fixed condition order
    (`choice_code`), per condition pair (``first vs second``) and overall, with 95 %
    percentile intervals from `bootstrap` item-cluster replicates (seeded): a replicate
    draws whole items, so the several raters of one item are never taken as independent.
    Out: ``overall`` and ``per_pair``, each with ``n`` (matched verdicts), ``n_items``,
    ``agreement``, ``agreement_ci``, ``kappa``, ``kappa_ci``."""
    matched = _matched(humans, judged, order)
    if matched.empty:
        return {"overall": None, "per_pair": [],
                "note": "no human verdict on a pair the judge answered"}  # fmt: skip
    item_codes, items = pd.factorize(matched["item"], sort=True)
    draws = item_bootstrap_counts(len(items), bootstrap, seed)
    per_pair = [
        {"pair": pair, **_agreement(group, item_codes[group.index], len(items), draws)}
        for pair, group in matched.groupby("pair", sort=False)
    ]
    overall = _agreement(matched, item_codes, len(items), draws)
    return {"overall": overall, "per_pair": per_pair, "note": None}


def _matched(humans: pd.DataFrame, judged: pd.DataFrame, order: Sequence[str]) -> pd.DataFrame:
    """One row per human verdict on a pair the judge answered: ``item, pair, human, judge``
    (choice codes), rows numbered from 0."""
    if humans.empty or judged.empty:
        return pd.DataFrame(columns=["item", "pair", "human", "judge"])
    rank = {name: i for i, name in enumerate(order)}

    def coded(table: pd.DataFrame) -> pd.DataFrame:
        first_second = [
            (a, b) if rank[a] <= rank[b] else (b, a)
            for a, b in zip(table["condition_a"], table["condition_b"], strict=True)
        ]
        return pd.DataFrame({
            "item": table["item"].astype(str).to_numpy(),
            "pair": [f"{a} vs {b}" for a, b in first_second],
            "code": [
                choice_code(a, b, w, order)
                for a, b, w in zip(table["condition_a"], table["condition_b"], table["winner"],
                                   strict=True)
            ],
        })

    human = coded(humans)
    judge = coded(judged).rename(columns={"code": "judge"})
    matched = human.rename(columns={"code": "human"}).merge(judge, on=["item", "pair"])
    return matched.reset_index(drop=True)


def _agreement(rows: pd.DataFrame, item_codes: np.ndarray, n_items: int,
               draws: np.ndarray) -> dict:  # fmt: skip
    """Kappa and raw agreement of ``rows`` (`_matched`), with item-bootstrap intervals."""
    # Each item's 3 × 3 counts (human choice × judge choice); a replicate's confusion
    # matrix is its draw counts times these.
    cells = rows["human"].to_numpy() * CHOICES + rows["judge"].to_numpy()
    per_item = np.zeros((n_items, CHOICES * CHOICES))
    np.add.at(per_item, (item_codes, cells), 1)
    confusion = per_item.sum(axis=0).reshape(CHOICES, CHOICES)
    replicates = (draws @ per_item).reshape(-1, CHOICES, CHOICES)
    n_replicate = replicates.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement_replicates = np.trace(replicates, axis1=1, axis2=2) / n_replicate
    kappa = float(cohen_kappa(confusion))
    return {
        "n": len(rows),
        "n_items": int(len(np.unique(item_codes))),
        "agreement": float(np.trace(confusion) / confusion.sum()),
        "agreement_ci": percentile_ci(agreement_replicates),
        "kappa": None if np.isnan(kappa) else kappa,
        "kappa_ci": percentile_ci(cohen_kappa(replicates)),
        "kappa_note": None if not np.isnan(kappa) else (
            "undefined: the human and the judge each always gave one and the same choice"
        ),
    }


def judge_position_bias(verdicts: pd.DataFrame, order: Sequence[str]) -> dict:
    """How often the judge's decisive verdicts pick the response shown first (the report's
    two-sided exact binomial test of ½, Wilson interval), and per pair judged in both
    orders what the two gave: the same condition both times (``consistent``), the first
    shown both times (``first_both``), the second shown both times (``second_both``), or
    a tie in one order only (``one_tie``)."""
    answered = verdicts[verdicts["winner"].notna()]
    overall = position_bias(_as_judgments(answered))["overall"]
    both = answered.pivot_table(
        index=["item", "condition_a", "condition_b"], columns="order", values="winner",
        aggfunc="first",
    ).reindex(columns=["ab", "ba"]).dropna()
    ab, ba = both["ab"], both["ba"]
    ties = (ab == "tie") | (ba == "tie")
    return {
        "n_decisive": overall["n_decisive"],
        "n_first": overall["n_left"],
        "first_rate": overall["left_rate"],
        "first_rate_ci": overall["left_rate_ci"],
        "p_value": overall["p_value"],
        "pairs_both_orders": len(both),
        "consistent": int((ab == ba).sum()),
        # In "ab" order condition a was shown first, so a then b is "first" both times.
        "first_both": int(((ab == "a") & (ba == "b")).sum()),
        "second_both": int(((ab == "b") & (ba == "a")).sum()),
        "one_tie": int((ties & (ab != ba)).sum()),
    }


def separation(human_pairs: Sequence[dict], judge_pairs: Sequence[dict]) -> list[dict]:
    """Per condition pair the humans compared: whether the humans and the judge each
    separate it (the item-cluster t test's Holm-adjusted p below `ALPHA`) and in which
    direction (the first condition's win rate with ties as half above or below ½), and
    whether the judge reaches the humans' conclusion (same separation, same direction)."""
    judged = {(p["condition_a"], p["condition_b"]): p for p in judge_pairs}
    rows = []
    for human in human_pairs:
        key = (human["condition_a"], human["condition_b"])
        judge = judged.get(key)
        human_call = _call(human)
        judge_call = _call(judge) if judge else None
        rows.append({
            "condition_a": key[0],
            "condition_b": key[1],
            "human_win_rate": human["win_rate_ties_half"],
            "human_p": human["p_cluster_holm"],
            "human": human_call,
            "judge_win_rate": judge["win_rate_ties_half"] if judge else None,
            "judge_p": judge["p_cluster_holm"] if judge else None,
            "judge": judge_call,
            "same": judge_call == human_call if judge else None,
        })
    return rows


def _call(pair: dict) -> str:
    """``first`` / ``second`` (which condition the test finds better) or ``none``."""
    p = pair["p_cluster_holm"]
    if p is None or p >= ALPHA:
        return "none"
    return "first" if pair["win_rate_ties_half"] > 0.5 else "second"


def judge_effect(verdicts: pd.DataFrame, order: Sequence[str]) -> dict | None:
    """The effect a judge pilot measured, in the power planner's terms (`analysis.power`):
    per comparison of the first condition (the baseline) with another, its share of the
    judge's decisive verdicts (each order one verdict) and the tie share; the planner's
    ``win_rate`` is the comparison nearest to no preference (the hardest to detect), put
    as the stronger side's share (0.5 + |P − 0.5|), and ``tie_rate`` the judge's overall
    tie share. None when no verdict of the judge compares the first condition.

    Out: ``win_rate``, ``tie_rate``, ``hardest`` (that condition), ``comparisons``
    (``condition``, ``n``, ``first_share``, ``ties``)."""
    answered = verdicts[verdicts["winner"].notna()]
    first = order[0] if order else None
    comparisons = []
    for other in order[1:]:
        rows = answered[
            ((answered["condition_a"] == first) & (answered["condition_b"] == other))
            | ((answered["condition_a"] == other) & (answered["condition_b"] == first))
        ]
        if rows.empty:
            continue
        first_won = ((rows["condition_a"] == first) & (rows["winner"] == "a")) | (
            (rows["condition_b"] == first) & (rows["winner"] == "b")
        )
        ties = int((rows["winner"] == "tie").sum())
        decisive = len(rows) - ties
        comparisons.append({
            "condition": other,
            "n": len(rows),
            "ties": ties,
            "first_share": float(first_won.sum() / decisive) if decisive else 0.5,
        })
    if not comparisons:
        return None
    hardest = min(comparisons, key=lambda c: abs(c["first_share"] - 0.5))
    total = sum(c["n"] for c in comparisons)
    return {
        "win_rate": 0.5 + abs(hardest["first_share"] - 0.5),
        "tie_rate": sum(c["ties"] for c in comparisons) / total,
        "hardest": hardest["condition"],
        "comparisons": comparisons,
    }
