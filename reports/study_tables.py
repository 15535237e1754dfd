"""Adapter from a study in the database to the plain tables `analysis` reads: judgments,
generations, criterion ratings and profile answers, with raters pseudonymized."""

from __future__ import annotations

import pandas as pd

from analysis.alignment import NOT_RUN
from annotations.conditions import WEIGHT_BYTES_READ
from annotations.models import (
    CriterionRating,
    Enrolment,
    ExecutionJob,
    Generation,
    Judgment,
    Study,
)
from annotations.selectors import COUNTING_RULE, JudgmentsForAnalysis
from evaluation.sandbox.outcomes import outcome_kind

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
    "rationale",
    "gold",
    "gold_correct",
    "time_on_task_ms",
    "created_at",
    "counted",
]
# The Likert ratings in long format: one row per judgment, criterion and response.
RATING_EXPORT = [
    "judgment",
    "rater",
    "item",
    "criterion",
    "side",
    "condition",
    "screen_side",
    "value",
    "gold",
    "counted",
]
# Where and how a generation ran (`Generation.provenance`, `inference.provenance`).
PROVENANCE = (
    "host", "cpu_model", "threads", "gpu_name", "torch_version", "weight_format", "kernel_path",
)
# What names one machine: speed and memory are compared with dense only within one (the
# kernel path is left out: a policy may take its own).
MACHINE = ("host", "cpu_model", "gpu_name", "threads", "torch_version", "weight_format")
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
    "weight_bytes_read_per_token",
    "execution_status",
    "passed",
    "outcome",
    "kl_from_dense",
    "top1_agreement_with_dense",
    "rss_start_bytes",
    "rss_increase_bytes",
    *PROVENANCE,
    "machine",
]


def judgment_rows(study: Study, names: dict, *, counted: set[int]) -> list[dict]:
    """Every judgment of the study in `JUDGMENT_EXPORT`'s columns, oldest first; `names`
    maps rater id to pseudonym, ``counted`` says whether the id is in `counted` (the
    judgments `judgments_for_analysis` counts)."""
    rows = list(
        Judgment.objects.filter(assignment__pair__study=study)
        .order_by("created_at", "id")
        .values(
            "id",
            "choice",
            "winner",
            "both_bad",
            "rationale",
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
            "rationale": r["rationale"],
            "gold": r["assignment__pair__gold"] is not None,
            "gold_correct": r["gold_correct"],
            "time_on_task_ms": r["time_on_task_ms"],
            "created_at": r["created_at"].isoformat(),
            "counted": r["id"] in counted,
        }
        for r in rows
    ]


def rating_rows(study: Study, judgments: list[dict]) -> list[dict]:
    """Every Likert rating of the study in `RATING_EXPORT`'s long format: per judgment
    (rows of `judgment_rows`, whose pseudonyms and sides it reuses), criterion and side
    (``a``/``b`` in condition order, and the screen side the rater saw it on)."""
    by_id = {j["judgment"]: j for j in judgments}
    other = {"left": "right", "right": "left"}
    rows = []
    for judgment_id, criterion, value_a, value_b, cant_a, cant_b in (
        CriterionRating.objects.filter(judgment__assignment__pair__study=study)
        .order_by("judgment_id", "criterion__position", "criterion_id")
        .values_list("judgment_id", "criterion__name", "value_a", "value_b", "cant_judge_a",
                     "cant_judge_b")
    ):
        judgment = by_id[judgment_id]
        for side, value in _answers(value_a, value_b, cant_a, cant_b):
            screen = judgment["side_a"] if side == "a" else other[judgment["side_a"]]
            rows.append({
                "judgment": judgment_id,
                "rater": judgment["rater"],
                "item": judgment["item"],
                "criterion": criterion,
                "side": side,
                "condition": judgment[f"condition_{side}"],
                "screen_side": screen,
                "value": value,
                # The report's Likert means read only counted, non-gold judgments.
                "gold": judgment["gold"],
                "counted": judgment["counted"],
            })
    return rows


def _answers(value_a, value_b, cant_a: bool, cant_b: bool) -> list[tuple[str, int | str]]:
    """(side, value) of each answered side: a Likert value, or ``cant_judge`` (the rater's
    "can't judge", no number); a side an optional criterion left blank has no row."""
    answers = []
    for side, value, cant in (("a", value_a, cant_a), ("b", value_b, cant_b)):
        if cant:
            answers.append((side, CriterionRating.CANT_JUDGE))
        elif value is not None:
            answers.append((side, value))
    return answers


def generation_rows(study: Study) -> list[dict]:
    """Every generation of the study in `GENERATION_EXPORT`'s columns, with its sandbox
    verdict (``NOT_RUN`` where its check failed for good and never ran)."""
    generations = (
        Generation.objects.filter(item__study=study)
        .select_related("item", "condition", "execution", "execution_job")
        .order_by("item_id", "condition__position", "sample_index", "id")
    )
    rows = []
    for g in generations:
        execution = getattr(g, "execution", None)
        job = getattr(g, "execution_job", None)
        not_run = execution is None and job is not None and job.status == ExecutionJob.Status.FAILED
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
                "weight_bytes_read_per_token": g.telemetry.get(WEIGHT_BYTES_READ),
                "kl_from_dense": g.telemetry.get("kl_from_dense"),
                "top1_agreement_with_dense": g.telemetry.get("top1_agreement_with_dense"),
                "execution_status": execution.status if execution else (
                    NOT_RUN if not_run else None
                ),
                "passed": execution.passed if execution else None,
                "outcome": (
                    outcome_kind(execution.status, execution.stderr, execution.code)
                    if execution
                    else (NOT_RUN if not_run else None)
                ),
                **_memory_and_provenance(g),
            }
        )
    return rows


def _memory_and_provenance(g: Generation) -> dict:
    """The resident set at the start, the peak's increase over it, the provenance fields and
    the ``machine`` key (`MACHINE`'s recorded values joined by " / "; "" when none was
    recorded)."""
    known = g.rss_start_bytes is not None and g.peak_rss_bytes is not None
    facts = {key: g.provenance.get(key) for key in PROVENANCE}
    return {
        "rss_start_bytes": g.rss_start_bytes,
        "rss_increase_bytes": max(g.peak_rss_bytes - g.rss_start_bytes, 0) if known else None,
        **facts,
        "machine": " / ".join(
            f"{facts[key]} threads" if key == "threads" else str(facts[key])
            for key in MACHINE if facts[key] not in (None, "")
        ),
    }


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
    """``judgment, criterion, value_a, value_b``: the Likert ratings of the study's judgments
    that have a value for both responses ("can't judge" and blanks carry none)."""
    return pd.DataFrame(
        CriterionRating.objects.filter(
            judgment__assignment__pair__study=study, value_a__isnull=False,
            value_b__isnull=False,
        ).values_list("judgment_id", "criterion__name", "value_a", "value_b"),
        columns=["judgment", "criterion", "value_a", "value_b"],
    )


def counting_summary(selection: JudgmentsForAnalysis, names: dict, *, counted: int) -> dict:
    """What `COUNTING_RULE` kept and left out, raters by pseudonym: ``rule``, ``counted``,
    ``gold`` (the kept raters' attention checks), ``excluded_judgments`` and
    ``excluded_raters`` (``rater``, ``judgments``, ``reason``)."""
    return {
        "rule": COUNTING_RULE,
        "counted": counted,
        "gold": selection.gold.count(),
        "excluded_judgments": selection.excluded_judgments,
        "excluded_raters": [
            {"rater": names[r.rater_id], "judgments": r.judgments, "reason": r.reason}
            for r in selection.excluded
        ],
    }
