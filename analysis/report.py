"""A study's whole report from plain tables: agreement, preference, the mixed model,
alignment curves, static vs dynamic at matched sparsity, the Pareto front, and the
methods paragraph. No Django: `reports` builds the tables from a study and
renders the result.

In (`build_report`): *judgments* ``item, rater, condition_a, condition_b, winner``
(+ ``side_a``, ``generation_a``, ``generation_b``); *generations* ``generation, item,
condition, active_fraction, tokens_per_s, latency_s, peak_rss_bytes, passed``;
*conditions* ``[{"name", "policy"}]`` in study order (optionally ``summary``,
``skips_bytes``, ``model`` and ``model_fingerprint``, see `condition_table`); optionally
*profiles* ``rater, question, answer`` and the study's *profile_questions* for the subgroup
analysis. Out: a JSON-ready dict (``by_model`` None for a study of one model); every
statistic that cannot be computed is None with a note saying why.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from analysis.agreement import agreement_summary, choice_agreement, choice_codes
from analysis.alignment import (
    MATCH_TOLERANCE,
    condition_table,
    machines,
    matched_sparsity,
    pareto_front,
    quality_measure,
)
from analysis.by_model import by_model_section, study_models
from analysis.contracts import InputError
from analysis.divergence import divergence_preference
from analysis.findings import findings
from analysis.judge_agreement import VERDICT_COLUMNS, judge_section
from analysis.mixed import sparsity_preference_model
from analysis.plots import (
    alignment_figure,
    divergence_figure,
    pareto_figure,
    ratings_figure,
    subgroup_figure,
)
from analysis.pluralism import PERMUTATIONS, rater_directions, subgroup_analysis
from analysis.preference import oriented_pairs, pair_table, preference_summary
from analysis.quality import (
    criterion_agreement,
    criterion_means,
    exclusion_effect,
    gold_accuracy,
)
from analysis.sequential import STOPPING_RULE, sequential_section
from analysis.style import style_columns


def build_report(
    judgments: pd.DataFrame,
    generations: pd.DataFrame,
    conditions: Sequence[dict],
    *,
    criterion_ratings: pd.DataFrame | None = None,
    profiles: pd.DataFrame | None = None,
    profile_questions: Sequence[dict] = (),
    judge_verdicts: pd.DataFrame | None = None,
    weak_judges: Sequence[str] = (),
    bootstrap: int = 1000,
    permutations: int = PERMUTATIONS,
    seed: int = 0,
) -> dict:
    """Every number of the report (see the module docstring). Judgments flagged ``gold``
    (attention checks) only feed the gold accuracy; `criterion_ratings` (``judgment,
    criterion, value_a, value_b``) the per-criterion alpha and the raters' direction
    vectors; `profiles` and `profile_questions` the subgroups (`subgroup_analysis`, whose
    tests use `permutations`). No profile answer of a single rater reaches the output.
    `judge_verdicts` (`analysis.judge_agreement.VERDICT_COLUMNS`) are an LLM judge's:
    measured against the humans in ``judge``, never counted with them; `weak_judges`
    names those that are the shipped 135M model."""
    order = [c["name"] for c in conditions]
    judgments, gold_rows = _split_gold(judgments)
    gold = gold_accuracy(gold_rows)
    ratings = criterion_ratings if criterion_ratings is not None else pd.DataFrame()
    notes = []
    if len(conditions) < 2:
        notes.append(f"the study has {len(conditions)} condition(s): nothing to compare")
    if judgments.empty:
        notes.append("no judgments yet: agreement, preference and the mixed model need some")
    preference, preference_note = _preference(judgments, generations, order, bootstrap, seed)
    rows = condition_table(conditions, generations, preference)
    quality = quality_measure(rows)
    agreement = agreement_section(judgments, order, bootstrap=bootstrap, seed=seed)
    return {
        "counts": _counts(judgments, generations, conditions),
        "bootstrap": bootstrap,
        "permutations": permutations,
        "seed": seed,
        "notes": notes,
        "findings": findings(rows, agreement, preference),
        "agreement": agreement,
        "criteria": criterion_agreement(judgments, ratings, bootstrap=bootstrap, seed=seed),
        "criterion_means": criterion_means(
            judgments, ratings, order, bootstrap=bootstrap, seed=seed
        ),
        "gold": gold,
        "exclusion": exclusion_effect(judgments, gold, order, seed=seed),
        "preference": preference,
        "preference_note": preference_note,
        "sequential": sequential_section(judgments, order),
        "judge": judge_section(
            judgments,
            judge_verdicts if judge_verdicts is not None else pd.DataFrame(columns=VERDICT_COLUMNS),
            order,
            human_pairs=preference["pairs"] if preference else None,
            bootstrap=bootstrap,
            seed=seed,
            weak=weak_judges,
        ),
        "mixed_model": sparsity_preference_model(judgments, generations, seed=seed),
        "rater_directions": rater_directions(judgments, generations),
        "subgroups": subgroup_analysis(
            judgments,
            generations,
            profiles=profiles,
            questions=profile_questions,
            criterion_ratings=ratings,
            permutations=permutations,
            seed=seed,
        ),
        "conditions": rows,
        "divergence": divergence_preference(
            judgments, generations, _dense(conditions), bootstrap=bootstrap, seed=seed
        ),
        # None for a study of one model: its report is as before.
        "by_model": by_model_section(conditions, rows, generations),
        "machines": machines(generations),
        "matched_sparsity": matched_sparsity(rows, preference),
        "match_tolerance": MATCH_TOLERANCE,
        "pareto": {
            "quality": quality,
            "front": pareto_front(rows, quality) if quality else [],
            "note": None
            if quality
            else "no quality measure moves: the front needs Pass@1 or a BT rating that "
            "differs between conditions, and tokens/s, for every condition",
        },
        "methods": METHODS,
    }


def study_page_summary(
    judgments: pd.DataFrame,
    generations: pd.DataFrame,
    conditions: Sequence[dict],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """What a study page shows of `build_report`, computed by the same functions on the
    same tables and settings, so these are the report's numbers: ``counts``, ``conditions``
    (telemetry and Pass@1; their Bradley–Terry and win-rate columns are None, those need
    the models), ``agreement``, ``preference`` (only its ``pairs``), ``preference_note``,
    ``sequential`` and ``models`` (the keys of the conditions' models, in study order).
    Without the statistical models, plots and subgroups, which take seconds."""
    order = [c["name"] for c in conditions]
    judgments, _ = _split_gold(judgments)
    preference, preference_note = None, "no judgments yet"
    if not judgments.empty:
        try:
            pairs = pair_table(judgments)
            preference = {"pairs": oriented_pairs(pairs, order)}
            preference_note = None
        except InputError as error:
            preference_note = str(error)
    return {
        "counts": _counts(judgments, generations, conditions),
        "bootstrap": bootstrap,
        "seed": seed,
        "agreement": agreement_section(judgments, order, bootstrap=bootstrap, seed=seed),
        "preference": preference,
        "preference_note": preference_note,
        "sequential": sequential_section(judgments, order),
        "conditions": condition_table(conditions, generations, None),
        "models": study_models(conditions),
        "machines": machines(generations),
    }


def _dense(conditions: Sequence[dict]) -> str | None:
    """The dense condition's name (the first, if a study has several), or None."""
    return next((c["name"] for c in conditions if c["policy"].get("kind") == "dense"), None)


def _split_gold(judgments: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ordinary judgments and the attention checks (``gold``), which only feed the
    gold accuracy."""
    gold = judgments[judgments["gold"].astype(bool)] if "gold" in judgments else judgments[:0]
    return judgments.drop(index=gold.index), gold


def _counts(
    judgments: pd.DataFrame, generations: pd.DataFrame, conditions: Sequence[dict]
) -> dict:
    return {
        "judgments": len(judgments),
        "raters": int(judgments["rater"].nunique()) if len(judgments) else 0,
        # The study's items with an output or a verdict, not only the judged ones: a
        # report before any judgment said "0 items · 20 finished generations".
        "items": _items(judgments, generations),
        "conditions": len(conditions),
        "generations": len(generations),
    }


def _preference(
    judgments: pd.DataFrame,
    generations: pd.DataFrame,
    order: Sequence[str],
    bootstrap: int,
    seed: int,
) -> tuple[dict | None, str | None]:
    """`preference_summary`, style-controlled on whatever style the outputs let us measure
    (length, code blocks, markdown, tests passed), the sentence about the first (dense)
    condition."""
    if judgments.empty:
        return None, "no judgments yet"
    styled, controls = style_columns(judgments, generations)
    judged = set(judgments["condition_a"]) | set(judgments["condition_b"])
    focus = order[0] if order and order[0] in judged else None
    try:
        summary = preference_summary(
            styled, bootstrap=bootstrap, seed=seed, controls=controls, focus=focus
        )
    except InputError as error:
        return None, str(error)
    summary["pairs"] = oriented_pairs(summary["pairs"], order)
    return summary, None


def agreement_section(
    judgments: pd.DataFrame, order: Sequence[str], *, bootstrap: int, seed: int
) -> dict:
    """Krippendorff's alpha of the choice (nominal, coded in the fixed condition `order`),
    overall and per condition pair, with percent agreement with and without ties and
    rater-vs-consensus agreement. Out: ``overall``, ``choice`` and ``per_pair``, or a
    ``note`` when there is nothing to agree on."""
    if judgments.empty:
        return _no_agreement("no judgments yet")
    try:
        codes = choice_codes(judgments, order)
        pair = codes["unit"].str.split(": ", n=1).str[1]
        per_pair = []
        for name, group in codes.groupby(pair, sort=False):
            summary = agreement_summary(group, "nominal", bootstrap=bootstrap, seed=seed)
            per_pair.append({"pair": name, **_brief(summary)})
        overall = agreement_summary(codes, "nominal", bootstrap=bootstrap, seed=seed)
    except InputError as error:  # e.g. a rater who judged the same unit twice
        return _no_agreement(f"agreement not computed: {error}")
    note = overall["alpha_note"]
    if overall["n_raters"] == 1:
        note = "one rater only: agreement needs at least two raters on a unit"
    return {
        "overall": overall,
        "choice": choice_agreement(codes),
        "per_pair": per_pair,
        "note": note,
    }


def _items(judgments: pd.DataFrame, generations: pd.DataFrame) -> int:
    """How many distinct items the judgments and the finished generations cover."""
    frames = [table["item"] for table in (judgments, generations) if "item" in table]
    return int(pd.concat(frames).nunique()) if frames else 0


def _no_agreement(note: str) -> dict:
    return {"overall": None, "choice": None, "per_pair": [], "note": note}


def _brief(summary: dict) -> dict:
    keys = ("alpha", "alpha_ci", "alpha_note", "n_units", "n_pairable_units", "percent_agreement")
    return {key: summary[key] for key in keys}


def report_figures(report: dict) -> dict[str, str]:
    """The report's plots as base64 PNG, by name; a plot without data is left out."""
    figures = {}
    rows = report["conditions"]
    if rows:
        figures["alignment"] = alignment_figure(rows)
    if any(r.get("kl_from_dense") is not None for r in rows):
        figures["divergence"] = divergence_figure(rows, report["divergence"])
    if report["preference"]:
        figures["ratings"] = ratings_figure(report["preference"]["bradley_terry"])
    quality = report["pareto"]["quality"]
    if quality:
        figures["pareto"] = pareto_figure(rows, report["pareto"]["front"], quality)
    groupings = subgroup_groupings(report["subgroups"])
    if groupings:
        figures["subgroups"] = subgroup_figure(groupings)
    return figures


def subgroup_groupings(subgroups: dict) -> list[tuple[str, list[dict]]]:
    """(title, groups with statistics) per profile question and for the rater clusters;
    groupings without two such groups are left out."""
    groupings = [(s["label"], s["groups"]) for s in subgroups["profile"]]
    if subgroups["clusters"]["groups"]:
        groupings.append(("rater clusters (exploratory)", subgroups["clusters"]["groups"]))
    shown = [(title, [g for g in groups if g.get("pairs")]) for title, groups in groupings]
    return [(title, groups) for title, groups in shown if len(groups) >= 2]


METHODS = (
    "Agreement: each verdict is coded in the study's fixed condition order (first condition "
    "better = 0, tie = 1, second better = 2; never by screen side); Krippendorff's alpha "
    "(nominal, the krippendorff package) over units = item × condition pair, overall and per "
    "condition pair, with 95 % percentile bootstrap CIs resampling units; Fleiss' kappa where "
    "every unit has the same number of raters; mean pairwise Cohen's kappa; pairwise percent "
    "agreement with ties and with tie verdicts excluded; each rater's agreement with the "
    "strict majority of the other raters of a unit (rater vs consensus); Krippendorff's "
    "alpha (ordinal) of each rating criterion, a unit being one response in one judged pair; "
    "each criterion's mean Likert value per condition on the counted judgments (gold checks "
    "left out) with a 95 % item-cluster bootstrap interval; "
    "accuracy on gold (attention-check) pairs, which are left out of every other statistic, "
    "and alpha and Bradley–Terry ratings recomputed without raters below 80 % gold accuracy. "
    "Preference: per condition pair wins / ties / losses, win rate with ties as half (Wilson "
    "95 % CI, and a 95 % CI with items and raters as clusters: the two-way cluster-robust "
    "variance of Cameron, Gelbach & Miller (2011), items' plus raters' minus the item × rater "
    "cells', the raters' share kept only where positive, Student's t with items − 1 degrees "
    "of freedom) and with ties excluded (Wilson), and a t test of the win rate against ½ "
    "with the same two clusterings (the items' cluster-robust variance under the null plus "
    "the raters' share; items − 1 degrees of freedom; Holm across pairs), which takes "
    "neither the raters of one item nor the verdicts of one rater as independent (a sign "
    "test on every verdict would; summary.json keeps it as p_sign_test for reference, and "
    "no sentence or page reads it); "
    "Bradley–Terry strengths "
    "by maximum likelihood (choix ILSR, regularisation 0.01, a tie counts half a win each "
    "way) with 95 % CIs from the sandwich estimator (as Chatbot Arena's) with items and "
    "raters as clusters (the two-way cluster-robust meat, items' plus the raters' share "
    "beyond the item × rater cells', Student's t with items − 1 df), ranked as in "
    "Chatbot Arena (1 + conditions whose lower bound exceeds this one's upper bound); online "
    "Elo (K = 4) for comparison only; ties modelled by Davidson's (1970) Bradley–Terry "
    "model with a tie parameter ν (maximum likelihood, item-bootstrap CIs); style control as "
    "in Chatbot Arena: Bradley–Terry with covariates for the pair's difference in output "
    "length (log ratio of tokens), fenced code blocks, markdown elements and share of tests "
    "passed (those the outputs let us measure), its ratings at equal style on the same "
    "scale and its coefficients with CIs from the item bootstrap, and the share of the "
    "first condition's advantage over the others the covariates explain; position bias as "
    "a two-sided exact binomial test of P(left chosen) = 0.5 on decisive verdicts, overall "
    "and per rater with Holm correction. "
    "Mixed model: a Bayesian mixed-effects logistic regression (statsmodels "
    "BinomialBayesMixedGLM, variational Bayes) of choosing the sparser output on the "
    "sparsity gap (achieved sparsity = 1 − mean active fraction of each generation) with "
    "random intercepts for rater and item, on decisive verdicts between outputs of different "
    "sparsity; intervals are posterior mean ± 1.96 SD. Per rater, the share of those "
    "verdicts won by the sparser output (Wilson CI) and a chi-square test of homogeneity "
    "across raters with at least 5 of them (do raters disagree about sparsity?). "
    "Subgroups (pluralistic view): raters are grouped by each profile question the study "
    "asks (answers “prefer not to say” left out) and, exploratorily, by "
    "agglomerative (Ward) clusters of their direction vectors (per condition pair 2 × "
    "share of decisive verdicts won by the sparser output − 1, and per criterion the "
    "mean Likert difference sparser − denser over the criterion's range; raters with at "
    "least 5 such verdicts; k in 2–4 by the highest mean silhouette with at least 3 "
    "raters per cluster). Per group: the share of verdicts won by the sparser output overall "
    "and per condition pair (Wilson CIs) and the odds ratio per +0.1 gap of its logistic "
    "curve; groups of fewer than 2 raters are not shown. "
    "Whether the groups disagree about the threshold: the likelihood ratio of one logistic "
    "curve of preferring the sparser output on the sparsity gap per group against one "
    "curve for all (group and group × gap terms), with a permutation p-value that "
    "reassigns group labels across raters (the rater, not the judgment, is the unit), "
    "(1 + exceedances) / (1 + permutations). The cluster test is exploratory only: clusters "
    "formed from the same judgments inflate its significance. "
    "Alignment: per condition, Pass@1 (mean over problems of the share of sandbox checks "
    "passed; 95 % CI: Wilson with one sample per problem; with several samples of a problem, "
    "which are not independent, a percentile bootstrap over problems of the mean per-problem "
    "share, 2000 replicates, seed 0, Wilson over problems where the bootstrap has no width), "
    "mean tokens/s (new tokens over the whole latency, prompt included), prefill tokens/s "
    "(prompt tokens over the prompt's forward) and decode tokens/s (one over the mean decode "
    "step), apart because a long prompt's prefill is not decode speed, latency, weight bytes "
    "read per token, peak "
    "resident memory and its increase over the worker's resident set at the generation's "
    "start, the divergence from dense (dense's answer teacher-forced under dense and under "
    "the policy: mean per-token KL(dense ‖ policy) and top-1 agreement) "
    "(each generation records its machine: host, CPU model, threads, GPU, torch "
    "version, weight format, and its kernel path; a worker generates each item's conditions "
    "together in a rotating order) of finished generations (each with a normal 95 % CI of "
    "the mean over generations), all against one axis, the achieved sparsity (1 − mean "
    "active fraction, with its CI), one curve per policy family and site; "
    "divergence and preference: across the sparse conditions, Pearson's correlation and the "
    "least-squares slope of the win rate against dense (ties ½) on the mean KL from dense "
    "(at least 3 conditions), and within conditions the same on (item, condition) points "
    "with each condition's mean taken out of both, each with a 95 % percentile bootstrap "
    "interval over items (a drawn item brings its verdicts and its outputs); "
    "each non-static policy is compared with the static policy of nearest achieved sparsity "
    "when the two are within the stated tolerance, else reported as no match "
    "(differences, and their head-to-head win rate with a Wilson CI when judged directly); "
    "the opening answer says higher or lower only from a paired test of each condition "
    "against dense, Holm-adjusted over the settings of one policy family and site (its "
    "sweep), at the 5 % level: the win rate against ½ by the item × rater cluster t test; "
    "Pass@1 on "
    "the problems both answered by McNemar's exact test on the discordant problems (dense "
    "right and the condition wrong, and the reverse), or with several samples a problem by "
    "the clustered McNemar test of Durkalski et al. (2003), problems as clusters, with "
    "Newcombe's (1998) paired interval of the difference (one sample a problem) or a paired "
    "percentile bootstrap over problems (2000 replicates, seed 0; several samples); "
    "tokens/s and weight bytes read per token as the geometric mean ratio to dense over items "
    "run under both on the same machine (generations of different machines are never paired), "
    "with a paired t test and Student-t interval on the log ratio; peak memory as the mean "
    "paired difference from dense (paired t test); where no difference is detected it states "
    "the smallest change the data could detect at 80 % power (normal approximation at the "
    "observed spread; Connor's 1987 approximation for McNemar's test). An interval without "
    "width is shown as none, with the reason, never as certainty; "
    "the Pareto front keeps conditions that no other beats on both quality (Pass@1, else BT "
    "rating) and tokens/s. Bootstrap resamples, permutations and seed are stated at the top of "
    "the report. "
    "By model (a study whose conditions run on several models or alignment-vector points): "
    "one curve per model against the achieved sparsity, each model's conditions compared with "
    "its own dense condition; whether a model keeps more neurons than another at the same "
    "policy as the mean paired difference in achieved sparsity over the items (and samples) "
    "both answered, with a Student-t 95 % interval and paired t test, Holm-adjusted over the "
    "comparisons. "
    "LLM judge (never counted with the human judgments): each ordinary pair is asked of the "
    "judge in both orders; its two answers are combined into one verdict per pair (mean "
    "score, a tie where the orders disagree; an order with no readable verdict left out); "
    "judge–human agreement pairs every counted human verdict with the judge's verdict on "
    "the same pair: raw agreement and Cohen's kappa over the three choices in the fixed "
    "condition order, per condition pair and overall, with 95 % percentile CIs from the same "
    "item-cluster bootstrap; position bias is the share of the judge's decisive verdicts "
    "for the response shown first (exact binomial test) and the pairs whose two orders agree "
    "or follow the position; the judge's Bradley–Terry ratings and item-cluster t tests "
    "(Holm) are the humans' code run on its verdicts (each order one verdict), and a pair "
    "counts as separated at the 5 % level. "
    "Sequential monitoring: " + STOPPING_RULE
)
