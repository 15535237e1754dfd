"""Reads that the study pages need, kept out of the views."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q

from annotations.models import Assignment, Condition, Generation, Pair, Study


@dataclass(frozen=True)
class ConditionProgress:
    condition: Condition
    total: int
    done: int
    running: int
    failed: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


@dataclass(frozen=True)
class StudyProgress:
    conditions: list[ConditionProgress]
    failures: list[Generation]
    total: int
    done: int
    failed: int

    @property
    def finished(self) -> bool:
        """No generation is waiting or running any more."""
        return self.done + self.failed >= self.total

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def study_progress(study: Study) -> StudyProgress:
    """Generation counts per condition, plus the failed rows with their reasons."""
    per_condition = study.conditions.annotate(
        total=Count("generations"),
        done=Count("generations", filter=Q(generations__status=Generation.Status.DONE)),
        running=Count("generations", filter=Q(generations__status=Generation.Status.RUNNING)),
        failed=Count("generations", filter=Q(generations__status=Generation.Status.FAILED)),
    )
    rows = [
        ConditionProgress(c, total=c.total, done=c.done, running=c.running, failed=c.failed)
        for c in per_condition
    ]
    failures = list(
        Generation.objects.filter(item__study=study, status=Generation.Status.FAILED)
        .select_related("item", "condition")
        .order_by("id")[:50]
    )
    return StudyProgress(
        conditions=rows,
        failures=failures,
        total=sum(r.total for r in rows),
        done=sum(r.done for r in rows),
        failed=sum(r.failed for r in rows),
    )


@dataclass(frozen=True)
class RaterProgress:
    judged: int
    remaining: int

    @property
    def percent(self) -> int:
        total = self.judged + self.remaining
        return round(100 * self.judged / total) if total else 100


def rater_progress(study: Study, rater: AbstractBaseUser) -> RaterProgress:
    """How many pairs this rater has judged and how many more they could get."""
    judged = Assignment.objects.filter(
        pair__study=study, rater=rater, judgment__isnull=False
    ).count()
    open_ = Assignment.objects.filter(pair__study=study, rater=rater, judgment__isnull=True).count()
    available = (
        Pair.objects.filter(study=study)
        .exclude(assignments__rater=rater)
        .annotate(n=Count("assignments"))
        .filter(n__lt=study.overlap)
        .count()
    )
    return RaterProgress(judged=judged, remaining=open_ + available)


def studies_for_rater(rater: AbstractBaseUser) -> list[Study]:
    return list(Study.objects.filter(raters=rater, status=Study.Status.OPEN).order_by("name"))
