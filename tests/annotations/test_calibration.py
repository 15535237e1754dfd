"""Calibration as a background job (annotations/services/calibrations.py, tasks.calibrate): claimed
once, retried after a dead worker at most twice, sent again by beat's sweep when its
message or its worker was lost, and run by a real worker with the real model."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import selectors, services
from annotations.conditions import build_condition
from annotations.model_cache import loaded_model
from annotations.models import Calibration, Condition, Generation
from annotations.tasks import calibrations_reap, generations_enqueue
from inference.policies import Policy
from tests.annotations.conftest import make_study
from tests.support.worker import celery_worker, wait_for


def _calibrating_study(
    targets=(("static 40%", "static", 0.4, "h"), ("cal 50% @input", "calibrated", 0.5, "input")),
    name="Study",
):
    built = [
        build_condition(
            kind=kind, values={"target_sparsity_percent": str(t * 100), "site": site}, name=name
        )
        for name, kind, t, site in targets
    ]
    study = make_study(n_items=2, conditions=[("dense", {"kind": "dense"})]
                       + [(b.name, b.policy) for b in built], name=name)
    services.calibrations_create(study=study, built=built)
    return study


@pytest.mark.django_db
def test_a_calibration_is_claimed_once_and_given_up_after_two_dead_workers():
    study = _calibrating_study()
    first = services.calibrations_claim(study_id=study.id)
    assert len(first) == 2 and all(c.status == "running" for c in first)
    assert services.calibrations_claim(study_id=study.id) == [], "a second worker gets none"
    Calibration.objects.update(lease_until="2000-01-01T00:00Z")  # the worker died
    assert len(services.calibrations_claim(study_id=study.id)) == 2
    Calibration.objects.update(lease_until="2000-01-01T00:00Z")  # and died again
    assert services.calibrations_claim(study_id=study.id) == []
    assert set(Calibration.objects.values_list("status", flat=True)) == {"failed"}
    assert "gave up after 2 tries" in Calibration.objects.first().error


@pytest.mark.django_db
def test_the_sweep_sends_a_job_for_a_dead_worker_and_for_a_lost_message_once_per_study(
    django_capture_on_commit_callbacks,
):
    study = _calibrating_study()  # two pending calibrations
    with django_capture_on_commit_callbacks() as sent:
        assert calibrations_reap(queue_empty=False) == 0, "their message may still be queued"
        assert calibrations_reap(queue_empty=True) == 1, "lost: one job for the study"
    assert len(sent) == 1
    services.calibrations_claim(study_id=study.id)
    assert calibrations_reap(queue_empty=True) == 0, "a live worker holds them"
    Calibration.objects.update(lease_until=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks() as sent:
        assert calibrations_reap(queue_empty=False) == 1, "the worker died"
    assert len(sent) == 1
    Calibration.objects.update(status=Calibration.Status.DONE)
    assert calibrations_reap(queue_empty=True) == 0


@pytest.mark.django_db
def test_a_finished_calibration_writes_the_policy_only_while_it_holds_the_lease():
    study = _calibrating_study(targets=(("static 40%", "static", 0.4, "h"),))
    [claimed] = services.calibrations_claim(study_id=study.id)
    policy = {"kind": "static", "threshold": 0.123}
    assert services.calibration_finish(calibration=claimed, policy=policy,
                                       expected_sparsity=0.4)
    assert Condition.objects.get(name="static 40%").policy == policy
    assert not services.calibration_finish(calibration=claimed, policy={"kind": "dense"},
                                           expected_sparsity=0.0), "done once"
    assert Condition.objects.get(name="static 40%").policy == policy


@pytest.mark.django_db
def test_the_task_stores_the_engines_calibration_and_creates_the_outputs(tiny_model_configured):
    from annotations.tasks import calibrate
    from inference.profile import CALIBRATION_NEW_TOKENS, profile_model
    from inference.profile import calibrate as engine_calibrate

    study = _calibrating_study()
    assert calibrate(study.id) == "calibrated 2"
    prompts = selectors.calibration_prompts(study=study, prompt_set="items")
    profile = profile_model(loaded_model(), prompts, max_new_tokens=CALIBRATION_NEW_TOKENS)
    for row in Calibration.objects.select_related("condition"):
        base = {"kind": row.condition.policy["kind"], "site": row.condition.policy.get("site", "h")}
        expected = engine_calibrate(profile, base, row.target_sparsity)
        assert (row.status, row.progress) == ("done", 1.0)
        assert row.condition.policy == expected.policy.to_dict(), "what the CLI prints"
        assert row.expected_sparsity == pytest.approx(expected.sparsity)
    assert Generation.objects.filter(item__study=study).count() == 3 * 2


@pytest.mark.worker
@pytest.mark.model
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_calibrates_then_generates_the_waiting_conditions(tmp_path):
    study = _calibrating_study()
    study.max_new_tokens = 16
    study.save()
    # Generate was pressed before the calibration finished: only dense has rows.
    assert services.generations_create(study=study) == 2
    log_path = tmp_path / "worker.log"
    from annotations.tasks import calibrate

    with celery_worker(log_path, queues="generation") as worker:
        generations_enqueue(study=study)
        calibrate.delay(study.id)
        wait_for(lambda: selectors.calibration_state(study).finished, timeout_s=300,
                 what="both calibrations", log_path=log_path, process=worker)
        for row in selectors.calibration_state(study).rows:
            assert row.status == "done", f"{row.condition.name}: {row.error}"
        wait_for(lambda: Generation.objects.filter(item__study=study, status="done").count()
                 == 6, timeout_s=300, what="six generations", log_path=log_path,
                 process=worker)
        before = {c.name: c.policy for c in study.conditions.all()}
        calibrate.delay(study.id)  # a repeated message: nothing to do
        wait_for(lambda: "skipped" in log_path.read_text(), timeout_s=60,
                 what="the repeated calibration to be skipped", log_path=log_path,
                 process=worker)
    static = Policy.from_json(study.conditions.get(name="static 40%").policy)
    per_layer = Policy.from_json(study.conditions.get(name="cal 50% @input").policy)
    assert static.threshold > 0 and len(per_layer.thresholds) == 30
    assert per_layer.site == "input" and len(per_layer.thresholds[0]) == 4, "per projection"
    assert {c.name: c.policy for c in study.conditions.all()} == before, "idempotent"
    for row in selectors.calibration_state(study).rows:
        assert abs(row.expected_sparsity - row.target_sparsity) < 0.02, (
            f"{row.condition.name}: {row.expected_sparsity} on the profiled prompts")
    achieved = {
        name: 1 - sum(g.active_fraction for g in Generation.objects.filter(condition__name=name,
                                                                             item__study=study)) / 2
        for name in ("static 40%", "cal 50% @input")
    }
    # The same prompts, decoded a little longer than profiled: near the target, not on it.
    assert 0.25 < achieved["static 40%"] < 0.55, achieved
    assert 0.35 < achieved["cal 50% @input"] < 0.65, achieved


@pytest.mark.worker
@pytest.mark.model
@pytest.mark.django_db(transaction=True)
def test_beat_resends_lost_and_dead_calibrations_redoes_a_dead_one_once_then_fails_it(tmp_path):
    """Nobody sends a job: one study's calibration lost its message; another's died once
    (kill -9 leaves it running past its lease) and a third died twice. Beat's sweep sends
    both jobs: the first two are calibrated, the third is failed with the reason, which
    the setup page shows beside its retry button."""
    lost = _calibrating_study(targets=(("static 40%", "static", 0.4, "h"),), name="Lost")
    dead = _calibrating_study(
        targets=(("static 30%", "static", 0.3, "h"), ("static 60%", "static", 0.6, "h")),
        name="Dead",
    )
    passed = timezone.now() - timedelta(seconds=1)
    rows = Calibration.objects.filter(condition__study=dead)
    rows.update(status=Calibration.Status.RUNNING, lease_until=passed, attempts=1)
    rows.filter(condition__name="static 60%").update(attempts=2)
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path, queues="generation", env={"REAP_INTERVAL_S": "2"},
                       beat=True) as worker:
        wait_for(lambda: selectors.calibration_state(lost).finished
                 and selectors.calibration_state(dead).finished, timeout_s=300,
                 what="the sweep to send both calibration jobs", log_path=log_path,
                 process=worker)
    by_name = {c.condition.name: c for c in Calibration.objects.select_related("condition")}
    assert (by_name["static 40%"].status, by_name["static 40%"].attempts) == ("done", 1)
    assert (by_name["static 30%"].status, by_name["static 30%"].attempts) == ("done", 2)
    assert by_name["static 60%"].status == "failed"
    assert Policy.from_json(Condition.objects.get(name="static 40%").policy).threshold > 0
    staff = Client()
    staff.force_login(get_user_model().objects.create_user("staff-reap", is_staff=True))
    page = staff.get(reverse("study_setup", args=[dead.id])).content.decode()
    assert "gave up after 2 tries: the worker stopped (crashed or was killed)" in page
    assert "Retry failed calibrations" in page
