"""Adapter from a study in the database to the plain tables `analysis` reads: judgments,
generations, criterion ratings and profile answers, with raters pseudonymized."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from django.db.models import Avg, Count

from analysis.agreement import agreement_summary, choice_codes
from analysis.preference import preference_summary
from analysis.tables import InputError
from annotations.models import CriterionRating, Enrolment, Execution, Generation, Judgment, Study
from evaluation.passk import pass_at_k_over_problems


def judgments_table(study: Study) -> pd.DataFrame:
    """One row per judgment: item, rater, condition_a, condition_b, winner, side_a.

    condition_a is the condition that comes first in the study's order; side_a is
    where its output was shown to the rater (for the position-bias test)."""
    # Gold (attention-check) pairs test the rater, not the conditions: left out.
    rows = Judgment.objects.filter(
        assignment__pair__study=study, assignment__pair__gold__isnull=True
    ).values_list(
        "assignment__pair__item__task_id",
        "assignment__rater_id",
        "assignment__pair__generation_a__condition__name",
        "assignment__pair__generation_b__condition__name",
        "winner",
        "assignment__a_on_left",
    )
    return pd.DataFrame(
        [
            {
                "item": item,
                "rater": str(rater),
                "condition_a": a,
                "condition_b": b,
                "winner": winner,
                "side_a": "left" if a_on_left else "right",
            }
            for item, rater, a, b, winner, a_on_left in rows
        ],
        columns=["item", "rater", "condition_a", "condition_b", "winner", "side_a"],
    )


@dataclass
class StudyResults:
    n_judgments: int
    n_raters: int
    alpha: float | None = None
    alpha_ci: tuple[float, float] | None = None
    alpha_units: int = 0
    alpha_reason: str = ""
    pairs: list[dict] = field(default_factory=list)
    telemetry: list[dict] = field(default_factory=list)


def pass_at_1(study: Study) -> dict[str, dict]:
    """Pass@1 per condition name over the sandbox checks done so far.

    Out: {condition: {"pass_at_1", "n_problems", "n_passed", "n_checked"}}; conditions
    with no check yet are absent."""
    outcomes: dict[str, list[tuple[str, bool]]] = {}
    for condition, task_id, status in Execution.objects.filter(
        generation__item__study=study
    ).values_list("generation__condition__name", "generation__item__task_id", "status"):
        outcomes.setdefault(condition, []).append((task_id, status == Execution.Status.PASSED))
    result = {}
    for condition, rows in outcomes.items():
        estimate = pass_at_k_over_problems(rows, k=1)
        result[condition] = {
            "pass_at_1": estimate.pass_at_k,
            "n_problems": estimate.n_problems,
            "n_passed": estimate.n_passed,
            "n_checked": estimate.n_samples,
        }
    return result


def telemetry_table(study: Study) -> list[dict]:
    """Mean engine telemetry and Pass@1 of the finished generations, per condition."""
    passes = pass_at_1(study)
    rows = (
        Generation.objects.filter(item__study=study, status=Generation.Status.DONE)
        .values("condition__name", "condition__position")
        .annotate(
            n=Count("id"),
            active_fraction=Avg("active_fraction"),
            tokens_per_s=Avg("tokens_per_s"),
            latency_s=Avg("latency_s"),
            peak_rss_bytes=Avg("peak_rss_bytes"),
        )
        .order_by("condition__position")
    )
    return [
        {
            "condition": r["condition__name"],
            "n": r["n"],
            "active_fraction": r["active_fraction"],
            "tokens_per_s": r["tokens_per_s"],
            "latency_s": r["latency_s"],
            "peak_rss_mib": (r["peak_rss_bytes"] or 0) / 2**20,
            "pass_at_1": passes.get(r["condition__name"]),
        }
        for r in rows
    ]


def study_results(study: Study, *, bootstrap: int = 500, seed: int = 0) -> StudyResults:
    """Agreement and win rates of a study's judgments, for the study page."""
    table = judgments_table(study)
    results = StudyResults(
        n_judgments=len(table),
        n_raters=table["rater"].nunique(),
        telemetry=telemetry_table(study),
    )
    if table.empty:
        results.alpha_reason = "no judgments yet"
        return results
    order = list(study.conditions.order_by("position", "id").values_list("name", flat=True))
    agreement = agreement_summary(
        choice_codes(table, order), "nominal", bootstrap=bootstrap, seed=seed
    )
    results.alpha = agreement["alpha"]
    results.alpha_ci = agreement.get("alpha_ci")
    results.alpha_units = agreement["n_pairable_units"]
    results.alpha_reason = agreement.get("alpha_note") or ""
    try:
        preference = preference_summary(table, bootstrap=bootstrap, seed=seed)
    except InputError as exc:
        results.alpha_reason = results.alpha_reason or str(exc)
        return results
    results.pairs = preference["pairs"]
    return results


JUDGMENT_EXPORT = [
    "judgment",
    "item",
    "rater",
    "condition_a",
    "condition_b",
    "generation_a",
    "generation_b",
    "side_a",
    "choice",
    "winner",
    "both_bad",
    "gold",
    "gold_correct",
    "time_on_task_ms",
    "created_at",
]
GENERATION_EXPORT = [
    "generation",
    "item",
    "condition",
    "policy",
    "sample_index",
    "status",
    "text",
    "new_tokens",
    "latency_s",
    "tokens_per_s",
    "peak_rss_bytes",
    "active_fraction",
    "execution_status",
    "passed",
]
# Bootstrap resamples of a report unless told otherwise (the command's --bootstrap).
def rater_pseudonyms(rater_ids) -> dict:
    """rater id → ``rater-1`` … ``rater-n`` in id order: stable within one report, and no
    username or id leaves the database."""
    return {rid: f"rater-{i}" for i, rid in enumerate(sorted(set(rater_ids)), start=1)}


def judgment_rows(study: Study, names: dict) -> list[dict]:
    """Every judgment of the study in `JUDGMENT_EXPORT`'s columns, oldest first; `names`
    maps rater id to pseudonym."""
    rows = list(
        Judgment.objects.filter(assignment__pair__study=study)
        .order_by("created_at", "id")
        .values(
            "id",
            "choice",
            "winner",
            "both_bad",
            "gold_correct",
            "time_on_task_ms",
            "created_at",
            "assignment__pair__gold",
            "assignment__rater_id",
            "assignment__a_on_left",
            "assignment__pair__item__task_id",
            "assignment__pair__generation_a_id",
            "assignment__pair__generation_b_id",
            "assignment__pair__generation_a__condition__name",
            "assignment__pair__generation_b__condition__name",
        )
    )
    return [
        {
            "judgment": r["id"],
            "item": r["assignment__pair__item__task_id"],
            "rater": names[r["assignment__rater_id"]],
            "condition_a": r["assignment__pair__generation_a__condition__name"],
            "condition_b": r["assignment__pair__generation_b__condition__name"],
            "generation_a": r["assignment__pair__generation_a_id"],
            "generation_b": r["assignment__pair__generation_b_id"],
            "side_a": "left" if r["assignment__a_on_left"] else "right",
            "choice": r["choice"],
            "winner": r["winner"],
            "both_bad": r["both_bad"],
            "gold": r["assignment__pair__gold"] is not None,
            "gold_correct": r["gold_correct"],
            "time_on_task_ms": r["time_on_task_ms"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]


def generation_rows(study: Study) -> list[dict]:
    """Every generation of the study in `GENERATION_EXPORT`'s columns, with its sandbox
    verdict."""
    generations = (
        Generation.objects.filter(item__study=study)
        .select_related("item", "condition", "execution")
        .order_by("item_id", "condition__position", "sample_index", "id")
    )
    rows = []
    for g in generations:
        execution = getattr(g, "execution", None)
        rows.append(
            {
                "generation": g.id,
                "item": g.item.task_id,
                "condition": g.condition.name,
                "policy": g.condition.policy_text(),
                "sample_index": g.sample_index,
                "status": g.status,
                "text": g.text,
                "new_tokens": g.new_tokens,
                "latency_s": g.latency_s,
                "tokens_per_s": g.tokens_per_s,
                "peak_rss_bytes": g.peak_rss_bytes,
                "active_fraction": g.active_fraction,
                "execution_status": execution.status if execution else None,
                "passed": execution.passed if execution else None,
            }
        )
    return rows


def example_outputs(study: Study, generations: list[dict], limit: int = 3) -> list[dict]:
    """The first `limit` items with their prompt and each condition's first output."""
    items = list(study.items.order_by("id")[:limit])
    return [
        {
            "item": item.task_id,
            "prompt": item.prompt,
            "outputs": [
                g
                for g in generations
                if g["item"] == item.task_id
                and g["status"] == Generation.Status.DONE
                and g["sample_index"] == 0
            ],
        }
        for item in items
    ]


def profile_table(study: Study, names: dict) -> pd.DataFrame:
    """``rater, question, answer`` of the raters who judged (by pseudonym). It feeds only
    the subgroup statistics: no report file holds it."""
    rows = [
        (names[rater_id], question, answer)
        for rater_id, profile in Enrolment.objects.filter(
            study=study, rater_id__in=list(names)
        ).values_list("rater_id", "profile")
        if isinstance(profile, dict)
        for question, answer in profile.items()
    ]
    return pd.DataFrame(rows, columns=["rater", "question", "answer"])


def criterion_ratings_table(study: Study) -> pd.DataFrame:
    """``judgment, criterion, value_a, value_b``: the Likert ratings of the study's judgments."""
    return pd.DataFrame(
        CriterionRating.objects.filter(judgment__assignment__pair__study=study).values_list(
            "judgment_id", "criterion__name", "value_a", "value_b"
        ),
        columns=["judgment", "criterion", "value_a", "value_b"],
    )
