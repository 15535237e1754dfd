"""Adapter from a study in the database to the plain tables `analysis` reads: judgments,
generations, criterion ratings and profile answers, with raters pseudonymized.

`read_study` reads them all in one pass; `SOURCES` declares every table it reads, and the
report cache's fingerprint (`reports.build.report_fingerprint`) digests exactly those."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from django.db.models import Aggregate, Count, Max, Q, QuerySet, Sum
from django.db.models.functions import Length

from analysis.alignment import NOT_RUN
from analysis.judge_agreement import VERDICT_COLUMNS
from annotations import selectors
from annotations.conditions import WEIGHT_BYTES_READ
from annotations.models import (
    Condition,
    Criterion,
    CriterionRating,
    Enrolment,
    Execution,
    ExecutionJob,
    Generation,
    GoldAnswer,
    Item,
    Judgment,
    Study,
)
from annotations.selectors import COUNTING_RULE, JudgmentsForAnalysis
from evaluation.sandbox.outcomes import outcome_kind


@dataclass(frozen=True)
class Source:
    """One table a report reads: its rows of a study, and what of them can change: for large
    tables aggregates (with the count and largest id), for small ones the columns whole."""

    rows: Callable[[Study], QuerySet]
    changes: dict[str, Aggregate] = field(default_factory=dict)
    whole: tuple[str, ...] = ()

    def state(self, study: Study) -> object:
        """What of this table the fingerprint digests: a few aggregates, or the small table."""
        rows = self.rows(study)
        if self.whole:
            return list(rows.order_by("id").values_list(*self.whole))
        return rows.aggregate(n=Count("id"), last=Max("id"), **self.changes)


# Every table a report reads (`read_study`), and so what its cached files depend on.
SOURCES: dict[str, Source] = {
    "items": Source(lambda study: Item.objects.filter(study=study)),
    "conditions": Source(lambda study: Condition.objects.filter(study=study),
                         whole=("id", "name", "policy", "position", "model_id",
                                "aligned_model_id", "alignment_lambda")),
    "criteria": Source(lambda study: Criterion.objects.filter(study=study), whole=("id", "name")),
    "gold": Source(lambda study: GoldAnswer.objects.filter(pair__study=study),
                   whole=("pair_id", "winner")),
    "enrolments": Source(lambda study: Enrolment.objects.filter(study=study),
                         whole=("rater_id", "profile", "blocked_at", "gold_failures")),
    "judgments": Source(
        lambda study: Judgment.objects.filter(assignment__pair__study=study),
        changes={
            "at": Max("created_at"),
            "a": Count("id", filter=Q(winner="a")),
            "b": Count("id", filter=Q(winner="b")),
            "both_bad": Count("id", filter=Q(both_bad=True)),
            "gold_correct": Count("id", filter=Q(gold_correct=True)),
        },
    ),
    "ratings": Source(
        lambda study: CriterionRating.objects.filter(judgment__assignment__pair__study=study),
        changes={
            "a": Sum("value_a"), "b": Sum("value_b"),
            "cant_a": Count("id", filter=Q(cant_judge_a=True)),
            "cant_b": Count("id", filter=Q(cant_judge_b=True)),
        },
    ),
    "generations": Source(
        lambda study: Generation.objects.filter(item__study=study),
        changes={
            "at": Max("finished_at"),
            "done": Count("id", filter=Q(status=Generation.Status.DONE)),
            "active": Sum("active_fraction"),
            "speed": Sum("tokens_per_s"),
            "latency": Sum("latency_s"),
            "rss": Sum("peak_rss_bytes"),
            "tokens": Sum("new_tokens"),
            "text": Sum(Length("text")),
            # The worker adds divergence from dense to finished outputs later.
            "divergence": Count("id", filter=Q(telemetry__has_key="kl_from_dense")),
        },
    ),
    "executions": Source(
        lambda study: Execution.objects.filter(generation__item__study=study),
        changes={"at": Max("created_at"),
                 "passed": Count("id", filter=Q(status=Execution.Status.PASSED))},
    ),
    "judge_verdicts": Source(
        selectors.judge_verdicts_answered,
        changes={
            "at": Max("updated_at"),
            "a": Count("id", filter=Q(winner="a")),
            "b": Count("id", filter=Q(winner="b")),
            "tie": Count("id", filter=Q(winner="tie")),
            "fingerprints": Count("answered_fingerprint", distinct=True),
        },
    ),
    "checks_not_run": Source(
        lambda study: ExecutionJob.objects.filter(
            generation__item__study=study, status=ExecutionJob.Status.FAILED
        )
    ),
}

JUDGMENT_EXPORT = [
    "judgment",
    "item",
    "rater",
    "condition_a",
    "condition_b",
    # The models of the two sides (`selectors.ConditionModel.key`).
    "model_a",
    "model_b",
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
    # The weights it ran: the condition's model key (`selectors.ConditionModel`) and the
    # content fingerprint the worker recorded for this output.
    "model",
    "model_fingerprint",
    "policy",
    "sample_index",
    "status",
    "text",
    "prompt_tokens",
    "new_tokens",
    "latency_s",
    "tokens_per_s",
    "prefill_tokens_per_s",
    "decode_tokens_per_s",
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


def judgment_rows(
    study: Study, names: dict, *, counted: set[int],
    models: dict[int, selectors.ConditionModel] | None = None,
) -> list[dict]:
    """Every judgment of the study in `JUDGMENT_EXPORT`'s columns, oldest first; `names`
    maps rater id to pseudonym, ``counted`` says whether the id is in `counted` (the
    judgments `judgments_for_analysis` counts), `models` (default: read) is
    `selectors.condition_models`."""
    if models is None:
        models = selectors.condition_models(study)
    rows = list(
        SOURCES["judgments"].rows(study)
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
            "assignment__pair__generation_a__condition_id",
            "assignment__pair__generation_b__condition_id",
        )
    )
    return [
        {
            "judgment": r["id"],
            "item": r["assignment__pair__item__task_id"],
            "rater": names[r["assignment__rater_id"]],
            "condition_a": r["assignment__pair__generation_a__condition__name"],
            "condition_b": r["assignment__pair__generation_b__condition__name"],
            "model_a": models[r["assignment__pair__generation_a__condition_id"]].key,
            "model_b": models[r["assignment__pair__generation_b__condition_id"]].key,
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
        SOURCES["ratings"].rows(study)
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
        SOURCES["generations"].rows(study)
        .select_related("item", "condition__model", "condition__aligned_model", "execution",
                        "execution_job")
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
                "model": selectors.condition_model_key(g.condition),
                "model_fingerprint": g.model_fingerprint,
                "policy": g.condition.policy_text(),
                "sample_index": g.sample_index,
                "status": g.status,
                "text": g.text,
                "new_tokens": g.new_tokens,
                "latency_s": g.latency_s,
                "prompt_tokens": g.prompt_tokens,
                "tokens_per_s": g.tokens_per_s,
                **_prefill_and_decode_speed(g),
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


def _prefill_and_decode_speed(g: Generation) -> dict:
    """The prompt's and the reply's speed apart: tokens/s pools them (new tokens over the
    whole latency), and a long prompt (DS-1000's) then reads as a slow decode.
    ``prefill_tokens_per_s``: prompt tokens over the prompt's forward; ``decode_tokens_per_s``:
    one token per decode step, over the mean step (the first new token, sampled from the
    prompt's forward, is not a step). None where the telemetry lacks them (no step ran)."""
    prefill_s = g.telemetry.get("prefill_s") or 0.0
    step_s = g.telemetry.get("decode_latency_s_per_token") or 0.0
    return {
        "prefill_tokens_per_s": g.prompt_tokens / prefill_s
        if prefill_s > 0 and g.prompt_tokens else None,
        "decode_tokens_per_s": 1.0 / step_s if step_s > 0 else None,
    }


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
    items = list(SOURCES["items"].rows(study).order_by("id")[:limit])
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
        for rater_id, profile in SOURCES["enrolments"].rows(study).filter(
            rater_id__in=list(names)
        ).values_list("rater_id", "profile")
        if isinstance(profile, dict)
        for question, answer in profile.items()
    ]
    return pd.DataFrame(rows, columns=["rater", "question", "answer"])


def criterion_ratings_table(study: Study) -> pd.DataFrame:
    """``judgment, criterion, value_a, value_b``: the Likert ratings of the study's judgments
    that have a value for both responses ("can't judge" and blanks carry none)."""
    return pd.DataFrame(
        SOURCES["ratings"].rows(study).filter(
            value_a__isnull=False, value_b__isnull=False,
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


@dataclass
class StudyTables:
    """What the statistics of a study read, read once (`read_study`): every judgment (raters
    pseudonymized, with ``counted``), Likert rating and generation as export rows, the
    counting rule's outcome, the conditions in study order, the ratings with both values,
    the profile answers of the raters kept, the example outputs and the item count."""

    names: dict[int, str]
    selection: JudgmentsForAnalysis
    counted: set[int]
    read: set[int]
    judgments: list[dict]
    ratings: list[dict]
    generations: list[dict]
    conditions: list[dict]
    criterion_ratings: pd.DataFrame
    profiles: pd.DataFrame
    examples: list[dict]
    items: int
    verdicts: list[dict]

    def judgments_read(self) -> pd.DataFrame:
        """The counted judgments and the kept raters' gold checks: what the statistics
        read (the exports hold every judgment, with ``counted``)."""
        return pd.DataFrame(
            [j for j in self.judgments if j["judgment"] in self.read], columns=JUDGMENT_EXPORT
        )

    def generations_done(self) -> pd.DataFrame:
        return pd.DataFrame(
            [g for g in self.generations if g["status"] == Generation.Status.DONE],
            columns=GENERATION_EXPORT,
        )

    def judge_verdicts(self) -> pd.DataFrame:
        return pd.DataFrame(self.verdicts, columns=[*VERDICT_COLUMNS, "fingerprint"])

    def counting(self) -> dict:
        return counting_summary(self.selection, self.names, counted=len(self.counted))


def read_study(study: Study) -> StudyTables:
    """Read a study's `StudyTables` in one pass, from the tables `SOURCES` declares; which
    judgments count is `selectors.judgments_for_analysis`'s rule."""
    names = selectors.rater_pseudonyms(study)
    selection = selectors.judgments_for_analysis(study)
    counted = set(selection.counted.values_list("id", flat=True))
    excluded = {r.rater_id for r in selection.excluded}
    models = selectors.condition_models(study)
    conditions = [
        {
            "name": c.name,
            "policy": c.policy,
            "summary": c.summary(),
            "skips_bytes": c.skips_bytes(),
            "bytes_note": c.bytes_note(),
            "model": models[c.id].key,
            "model_fingerprint": models[c.id].fingerprint,
            "target_sparsity": c.target_sparsity(),
        }
        for c in SOURCES["conditions"].rows(study).select_related("calibration")
        .order_by("position", "id")
    ]
    judgments = judgment_rows(study, names, counted=counted, models=models)
    generations = generation_rows(study)
    return StudyTables(
        names=names,
        selection=selection,
        counted=counted,
        read=counted | set(selection.gold.values_list("id", flat=True)),
        judgments=judgments,
        ratings=rating_rows(study, judgments),
        generations=generations,
        conditions=conditions,
        criterion_ratings=criterion_ratings_table(study),
        profiles=profile_table(
            study, {rid: name for rid, name in names.items() if rid not in excluded}
        ),
        examples=example_outputs(study, generations),
        items=SOURCES["items"].rows(study).count(),
        verdicts=selectors.judge_verdict_rows(study),
    )
