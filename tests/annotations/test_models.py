"""The rule every worker job shares (annotations/models.py: `LeasedJobQuerySet`): which rows
a worker may claim, which ones beat's sweep sends again, and a job redone once after its
worker died, then failed with the reason, the same for generations, calibrations and Pass@1
checks."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotations import services
from annotations.conditions import build_condition
from annotations.models import JOB_GAVE_UP, Calibration, ExecutionJob, Generation, Problem
from tests.annotations.conftest import make_study

pytestmark = pytest.mark.django_db


def _generations():
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    services.generations_create(study=study)
    return Generation.objects.filter(item__study=study)


def _calibrations():
    built = build_condition(
        kind="static", values={"target_sparsity_percent": "40"}, name="static 40%"
    )
    study = make_study(n_items=1, conditions=[(built.name, built.policy)])
    services.calibrations_create(study=study, built=[built])
    return Calibration.objects.filter(condition__study=study)


def _execution_jobs():
    problem = Problem.objects.create(
        dataset="humaneval", task_id="HumanEval/0", prompt="p", tests="assert True"
    )
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    study.items.update(problem=problem)
    services.generations_create(study=study)
    Generation.objects.filter(item__study=study).update(status=Generation.Status.DONE)
    assert services.execution_jobs_create(study=study) == 1
    return ExecutionJob.objects.filter(generation__item__study=study)


JOBS = pytest.mark.parametrize(
    "make_rows",
    [_generations, _calibrations, _execution_jobs],
    ids=["generation", "calibration", "execution"],
)


@JOBS
def test_the_sweep_takes_a_dead_workers_row_and_a_waiting_one_only_when_the_queue_is_empty(
    make_rows,
):
    rows = make_rows()
    now = timezone.now()
    assert not rows.lost(now, queue_empty=False).exists(), "its message may still be queued"
    assert rows.lost(now, queue_empty=True).count() == 1, "nothing queued: the message is lost"
    rows.update(status="running", lease_until=now + timedelta(minutes=1))
    assert not rows.lost(now, queue_empty=True).exists(), "a live worker holds it"
    rows.update(lease_until=now - timedelta(seconds=1))
    assert rows.lost(now, queue_empty=False).count() == 1, "its worker died"
    for finished in ("done", "failed"):
        rows.update(status=finished)
        assert not rows.lost(now, queue_empty=True).exists(), finished


@JOBS
def test_a_row_is_claimed_once_redone_after_one_death_and_failed_after_two(make_rows):
    rows = make_rows()
    now = timezone.now()
    mine = now + timedelta(minutes=1)
    assert len(rows.claim(now=now, lease_until=mine)) == 1
    assert rows.claim(now=now, lease_until=mine) == [], "a second worker gets none"
    later = mine + timedelta(seconds=1)  # the first worker died; its lease has passed
    assert len(rows.claim(now=later, lease_until=later + timedelta(minutes=1))) == 1
    last = later + timedelta(minutes=2)  # and the second one died too
    assert rows.claim(now=last, lease_until=last + timedelta(minutes=1)) == []
    row = rows.get()
    assert (row.status, row.attempts, row.lease_until) == ("failed", 2, None)
    assert row.error == JOB_GAVE_UP
    assert row.error.startswith("gave up after 2 tries: the worker stopped (crashed or was killed)")
