"""Models as conditions on real workers: two Celery worker processes, each started for its
own model (MODEL_KEYS), serve one study; every output is made by a worker holding its
condition's model, as the provenance each generation stores says."""

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import selectors, services, tasks
from annotations.models import Generation, ModelEntry
from inference.model_info import default_model_path, describe
from tests.annotations.conftest import make_study
from tests.support.models import perturbed_copy
from tests.support.worker import celery_worker, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _served(key: str) -> bool:
    return key in selectors.model_workers(now=timezone.now())


def test_two_workers_each_with_its_own_model_serve_one_study(tmp_path, users):
    perturbed = perturbed_copy(default_model_path(), tmp_path / "smol-perturbed", seed=30,
                               cache_dir=settings.MODEL_CACHE_DIR)
    entry = services.model_register(key="smol-b", path=str(perturbed))
    static = {"kind": "static", "threshold": 0.1}
    study = make_study(n_items=1, conditions=[
        ("dense", {"kind": "dense"}), ("static", static),
        ("dense on b", {"kind": "dense"}), ("static on b", static),
    ])
    study.max_new_tokens = 8
    study.save()
    study.conditions.filter(name__endswith="on b").update(model=entry)
    services.generations_create(study=study)
    staff = Client()
    staff.force_login(users[0])

    log_a, log_b = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    with celery_worker(log_a, queues="generation", name="a@test",
                       env={"MODEL_KEYS": "default"}) as worker_a:
        assert tasks.generations_enqueue(study=study) == 4
        wait_for(lambda: _served("default"), timeout_s=120, what="worker a's heartbeat",
                 log_path=log_a, process=worker_a)
        done_on_default = Generation.objects.filter(
            item__study=study, condition__model__isnull=True, status="done")
        wait_for(lambda: done_on_default.count() == 2, timeout_s=600,
                 what="the default model's outputs", log_path=log_a, process=worker_a)
        # Nobody holds smol-b: its outputs wait, and the study page says for what.
        assert set(Generation.objects.filter(condition__model=entry)
                   .values_list("status", flat=True)) == {"pending"}
        page = staff.get(reverse("study_detail", args=[study.id])).content.decode()
        assert "2 waiting for a worker with model smol-b" in page
        assert ModelEntry.objects.get(id=entry.id).status == "pending"

        with celery_worker(log_b, queues="generation", name="b@test",
                           env={"MODEL_KEYS": "smol-b"}, purge=False) as worker_b:
            # The worker validates its pending model as it starts, then takes its outputs.
            wait_for(lambda: ModelEntry.objects.get(id=entry.id).status != "pending",
                     timeout_s=300, what="smol-b's validation", log_path=log_b,
                     process=worker_b)
            wait_for(lambda: not Generation.objects.filter(
                item__study=study, status__in=["pending", "running"]).exists(),
                timeout_s=600, what="smol-b's outputs", log_path=log_b, process=worker_b)
            page = staff.get(reverse("study_detail", args=[study.id])).content.decode()
            assert "b@test" in page and "waiting for a worker" not in page

    entry.refresh_from_db()
    assert entry.status == "valid", entry.error
    expected = {
        "default": describe(default_model_path(), cache_root=settings.MODEL_CACHE_DIR)
        .fingerprint,
        "smol-b": entry.fingerprint,
    }
    assert expected["default"] != expected["smol-b"]
    workers = {"default": "a@test", "smol-b": "b@test"}
    rows = Generation.objects.filter(item__study=study).select_related("condition__model")
    for g in rows:
        key = g.condition.model_key
        facts = g.provenance
        assert g.status == "done", (g.condition.name, g.error)
        assert (facts["model_key"], facts["worker"]) == (key, workers[key]), facts
        assert key in facts["worker_model_keys"]
        assert g.model_fingerprint == facts["model_fingerprint"] == expected[key]
        assert facts["model_load_s"] > 0 and facts["model_merge_built"] is False
    # The worker that stopped cleanly no longer counts as serving its model.
    assert not _served("smol-b") and not _served("default")
