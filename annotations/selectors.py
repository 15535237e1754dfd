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
    cancelled: int = 0
    eta_s: float | None = None
    checks_pending: int = 0

    @property
    def finished(self) -> bool:
        """No generation is waiting or running any more, and no Pass@1 check is due."""
        return self.done + self.failed + self.cancelled >= self.total and not self.checks_pending

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
        cancelled=Count(
            "generations", filter=Q(generations__status=Generation.Status.CANCELLED)
        ),
    )
    per_condition = list(per_condition)
    rows = [
        ConditionProgress(c, total=c.total, done=c.done, running=c.running, failed=c.failed)
        for c in per_condition
    ]
    done = sum(r.done for r in rows)
    failed = sum(r.failed for r in rows)
    cancelled = sum(c.cancelled for c in per_condition)
    total = sum(r.total for r in rows)
    failures = list(
        Generation.objects.filter(item__study=study, status=Generation.Status.FAILED)
        .select_related("item", "condition")
        .order_by("id")[:50]
    )
    checks_pending = Generation.objects.filter(
        item__study=study,
        status=Generation.Status.DONE,
        item__problem__isnull=False,
        execution__isnull=True,
    ).count()
    return StudyProgress(
        conditions=rows,
        failures=failures,
        total=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        eta_s=_eta_s(study, remaining=total - done - failed - cancelled),
        checks_pending=checks_pending,
    )


def _eta_s(study: Study, *, remaining: int) -> float | None:
    """Seconds until the remaining generations are done, at the pace of the last ones."""
    if remaining <= 0:
        return None
    recent = list(
        Generation.objects.filter(item__study=study, finished_at__isnull=False)
        .order_by("-finished_at")
        .values_list("finished_at", flat=True)[:20]
    )
    if len(recent) < 2:
        return None
    seconds_each = (recent[0] - recent[-1]).total_seconds() / (len(recent) - 1)
    return seconds_each * remaining


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
