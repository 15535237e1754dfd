"""Adapter from a study in the database to the plain tables the statistics read.

The only module of `analysis` that knows Django; the statistics stay pure."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from django.db.models import Avg, Count

from analysis.agreement import agreement_summary, choice_codes
from analysis.preference import preference_summary
from analysis.tables import InputError
from annotations.models import Execution, Generation, Judgment, Study
from annotations.passk import pass_at_k_over_problems


def judgments_table(study: Study) -> pd.DataFrame:
    """One row per judgment: item, rater, condition_a, condition_b, winner, side_a.

    condition_a is the condition that comes first in the study's order; side_a is
    where its output was shown to the rater (for the position-bias test)."""
    rows = Judgment.objects.filter(assignment__pair__study=study).values_list(
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
