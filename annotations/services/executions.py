"""Writes of the Pass@1 checks: a job per finished, scorable generation, leased like a
generation (`services.generations.GENERATION_LEASE`), and its verdict stored once."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from annotations.models import Execution, ExecutionJob, Generation, Study
from annotations.services.generations import GENERATION_LEASE
from evaluation.sandbox.outcomes import ExecutionResult


def execution_jobs_create(*, study: Study) -> int:
    """A pending Pass@1 check for every finished, scorable generation of the study that
    has neither a check nor a verdict (`generation_complete` makes them as outputs are
    stored; this catches up rows stored otherwise). Returns how many were created."""
    unchecked = Generation.objects.filter(
        item__study=study,
        status=Generation.Status.DONE,
        item__problem__isnull=False,
        execution__isnull=True,
        execution_job__isnull=True,
    )
    jobs = [ExecutionJob(generation_id=g) for g in unchecked.values_list("id", flat=True)]
    ExecutionJob.objects.bulk_create(jobs, ignore_conflicts=True)
    return len(jobs)


def execution_claim(*, generation_id: int) -> Generation | None:
    """Take the Pass@1 check of a finished, scorable generation for this worker (the rule
    of `generation_claim`); the generation with its problem, or None."""
    now = timezone.now()
    job = ExecutionJob.objects.filter(
        generation_id=generation_id,
        generation__status=Generation.Status.DONE,
        generation__item__problem__isnull=False,
    )
    if not job.claim(now=now, lease_until=now + GENERATION_LEASE):
        return None
    return Generation.objects.select_related("item__problem", "condition").get(id=generation_id)


def execution_record(
    *, generation: Generation, code: str, result: ExecutionResult
) -> tuple[Execution, bool]:
    """Store the Pass@1 check of a generation once, its job done with it; a repeat returns
    the first record."""
    with transaction.atomic():
        execution, created = Execution.objects.get_or_create(
            generation=generation,
            defaults={
                "status": result.status,
                "code": code,
                "stderr": result.stderr[-4000:],
                "duration_s": result.duration_s,
                "containment": result.containment or "",
            },
        )
        # Done whoever held it: a verdict is stored, so nothing is left to run.
        ExecutionJob.objects.filter(generation_id=generation.id).update(
            status=ExecutionJob.Status.DONE, lease_until=None, error=""
        )
    return execution, created


def execution_fail(*, generation_id: int, error: str) -> None:
    """Record why a Pass@1 check could not run (shown on the study page); not retried."""
    ExecutionJob.objects.filter(
        generation_id=generation_id, status=ExecutionJob.Status.RUNNING
    ).update(status=ExecutionJob.Status.FAILED, error=error[:2000], lease_until=None)


