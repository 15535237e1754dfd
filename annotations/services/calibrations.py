"""Writes of the calibration job: a condition asks for a target sparsity, a worker on the
generation queue profiles the model and writes the thresholds into the condition's policy.

The profiling and the thresholds (torch) are `inference.profile`'s; this module only
moves rows, so the web process can import it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from annotations.conditions import BuiltCondition
from annotations.models import Calibration, Condition, Study
from annotations.queues import DEFAULT_MODEL_KEY

CALIBRATION_LEASE = timedelta(seconds=settings.GENERATION_LEASE_S)


def calibrations_create(*, study: Study, built: Iterable[BuiltCondition]) -> int:
    """A pending calibration for each built condition that needs one (matched by name).
    Returns how many were created; `tasks.calibrations_enqueue` sends the job."""
    targets = {b.name: b for b in built if b.needs_calibration}
    conditions = study.conditions.filter(name__in=targets)
    rows = [
        Calibration(
            condition=c,
            target_sparsity=targets[c.name].target_sparsity,
            prompt_set=targets[c.name].calibration_set,
        )
        for c in conditions
    ]
    Calibration.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def calibrations_retry(*, study: Study) -> int:
    """Failed calibrations of a study back to pending (then send the job again)."""
    return Calibration.objects.filter(
        condition__study=study, status=Calibration.Status.FAILED
    ).update(status=Calibration.Status.PENDING, attempts=0, error="", progress=0.0)


def calibrations_claim(*, study_id: int, model_key: str = DEFAULT_MODEL_KEY) -> list[Calibration]:
    """Take the study's waiting calibrations of conditions on `model_key` for this worker (a
    guarded update: a second worker, or a repeated message, gets none). A calibration whose
    worker died is taken over once; on its worker's second death it is marked failed
    (`LeasedJobQuerySet.claim`)."""
    now = timezone.now()
    on_model = (Q(condition__model__isnull=True) if model_key == DEFAULT_MODEL_KEY
                else Q(condition__model__key=model_key))
    ids = Calibration.objects.filter(on_model, condition__study_id=study_id).claim(
        now=now, lease_until=now + CALIBRATION_LEASE, progress=0.0
    )
    return list(Calibration.objects.filter(id__in=ids).select_related(
        "condition__study", "condition__model", "condition__aligned_model"
    ))


def calibrations_progress(*, calibrations: list[Calibration], progress: float) -> None:
    Calibration.objects.filter(
        id__in=[c.id for c in calibrations], status=Calibration.Status.RUNNING
    ).update(progress=progress)


def calibration_finish(*, calibration: Calibration, policy: dict, expected_sparsity: float) -> bool:
    """Store the chosen policy on the condition; False if the lease was lost meanwhile."""
    with transaction.atomic():
        done = Calibration.objects.filter(
            id=calibration.id, status=Calibration.Status.RUNNING,
            lease_until=calibration.lease_until,
        ).update(
            status=Calibration.Status.DONE, progress=1.0, expected_sparsity=expected_sparsity,
            lease_until=None, error="",
        )
        if done:
            Condition.objects.filter(id=calibration.condition_id).update(policy=policy)
    return bool(done)


def calibrations_fail(*, calibrations: list[Calibration], error: str) -> None:
    Calibration.objects.filter(
        id__in=[c.id for c in calibrations], status=Calibration.Status.RUNNING
    ).update(status=Calibration.Status.FAILED, error=error[:2000], lease_until=None)
