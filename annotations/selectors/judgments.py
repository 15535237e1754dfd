"""Which of a study's judgments count, and their exports' reads: the study page, the
report (`reports.study_tables`) and the DPO preference pairs all read these."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import Count, Q, QuerySet

from annotations.models import (
    Enrolment,
    Judgment,
    Study,
)

# The one rule for which judgments count: the study page, the report and its exports, and
# the preference pairs all read `judgments_for_analysis`, so they cannot disagree. It lives
# here, not in `reports`, because the DPO export (`preference_pairs`, an annotations page)
# needs it too, and annotations may not import reports (the flow runs the other way).
COUNTING_RULE = (
    "Judgments on gold (attention-check) pairs test the rater: they feed the gold accuracy "
    "only. Every judgment of a rater the study blocked (after its number of failed attention "
    "checks) is left out, gold checks included; every other judgment counts."
)


@dataclass(frozen=True)
class ExcludedRater:
    rater_id: int
    judgments: int  # their judgments on ordinary pairs, all left out
    gold_failures: int

    @property
    def reason(self) -> str:
        return f"blocked after {self.gold_failures} failed attention check(s)"


@dataclass(frozen=True)
class JudgmentsForAnalysis:
    """A study's judgments split by `COUNTING_RULE`: `counted` feed every statistic, `gold`
    (the kept raters' attention checks) only the gold accuracy; `excluded` says who was left
    out, with how many judgments and why."""

    counted: QuerySet[Judgment]
    gold: QuerySet[Judgment]
    excluded: list[ExcludedRater]

    @property
    def excluded_judgments(self) -> int:
        return sum(rater.judgments for rater in self.excluded)


def judgments_for_analysis(study: Study) -> JudgmentsForAnalysis:
    """Which of the study's judgments count (`COUNTING_RULE`), and what the rule left out."""
    blocked = dict(
        Enrolment.objects.filter(study=study, blocked_at__isnull=False).values_list(
            "rater_id", "gold_failures"
        )
    )
    judgments = Judgment.objects.filter(assignment__pair__study=study)
    kept = judgments.exclude(assignment__rater_id__in=list(blocked))
    ordinary = Q(assignment__pair__gold__isnull=True)
    # Per blocked rater who judged at all: their ordinary judgments, all left out.
    left_out = dict(
        judgments.filter(assignment__rater_id__in=list(blocked))
        .order_by()
        .values_list("assignment__rater_id")
        .annotate(n=Count("id", filter=ordinary))
    )
    return JudgmentsForAnalysis(
        counted=kept.filter(ordinary),
        gold=kept.exclude(ordinary),
        excluded=[
            ExcludedRater(rater_id=rater_id, judgments=n, gold_failures=blocked[rater_id])
            for rater_id, n in sorted(left_out.items())
        ],
    )


def rater_pseudonyms(study: Study) -> dict[int, str]:
    """rater id → ``rater-1`` … ``rater-n``, over every rater who judged in the study, in id
    order: the one naming of every export (the report's files and the DPO pairs), so no
    username or database id leaves the database."""
    ids = Judgment.objects.filter(assignment__pair__study=study).values_list(
        "assignment__rater_id", flat=True
    )
    return {rid: f"rater-{i}" for i, rid in enumerate(sorted(set(ids)), start=1)}


def preference_pairs(study: Study) -> Iterator[dict]:
    """Judgments as DPO preference records: prompt, chosen, rejected, plus ids.

    Ties, "both bad" and every judgment `COUNTING_RULE` leaves out are left out."""
    judgments = (
        judgments_for_analysis(study)
        .counted.filter(winner__in=[Judgment.Winner.A, Judgment.Winner.B])
        .select_related(
            "assignment__pair__item",
            "assignment__pair__generation_a__condition",
            "assignment__pair__generation_b__condition",
        )
        .order_by("id")
    )
    names = rater_pseudonyms(study)
    for judgment in judgments.iterator(chunk_size=500):
        pair = judgment.assignment.pair
        chosen, rejected = pair.generation_a, pair.generation_b
        if judgment.winner == Judgment.Winner.B:
            chosen, rejected = rejected, chosen
        yield {
            "prompt": pair.item.prompt,
            "chosen": chosen.text,
            "rejected": rejected.text,
            "study_id": study.id,
            "item_id": pair.item_id,
            "task_id": pair.item.task_id,
            "pair_id": pair.id,
            "judgment_id": judgment.id,
            "rater": names[judgment.assignment.rater_id],
            "chosen_condition": chosen.condition.name,
            "rejected_condition": rejected.condition.name,
        }
