"""A real Celery worker process generates a tiny study with the real model."""

import pytest

from annotations import services
from annotations.models import Generation, Pair
from tests.annotations.conftest import make_study
from tests.support.worker import celery_worker, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_worker_generates_every_item_condition_and_pairs_them(tmp_path):
    study = make_study(
        n_items=1,
        conditions=[
            ("dense", {"kind": "dense"}),
            ("static t=0.1", {"kind": "static", "threshold": 0.1}),
        ],
    )
    study.max_new_tokens = 12
    study.save()
    study.items.update(prompt="Write a Python function that returns the square of x.")
    assert services.generations_create(study=study) == 2
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path) as worker:
        assert services.generations_enqueue(study=study) == 2

        def all_finished() -> bool:
            return not Generation.objects.filter(
                item__study=study, status__in=["pending", "running"]
            ).exists()

        wait_for(all_finished, timeout_s=300, what="both generations", log_path=log_path,
                 process=worker)
    rows = {g.condition.name: g for g in Generation.objects.filter(item__study=study)}
    for name, g in rows.items():
        assert g.status == "done", f"{name}: {g.status} {g.error}"
        assert g.text.strip() and 0 < g.new_tokens <= 12
        assert g.latency_s > 0 and g.tokens_per_s > 0 and g.peak_rss_bytes > 0
        assert g.model_fingerprint and g.attempts == 1
    assert rows["dense"].active_fraction == 1.0
    assert rows["static t=0.1"].active_fraction < 1.0
    assert Pair.objects.filter(study=study).count() == 1


def test_redelivered_task_for_a_done_generation_changes_nothing(tmp_path):
    """At-least-once delivery: a second message for a finished row must be a no-op."""
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    study.max_new_tokens = 4
    study.save()
    services.generations_create(study=study)
    g = Generation.objects.get(item__study=study)
    log_path = tmp_path / "worker.log"
    from annotations.tasks import generate

    with celery_worker(log_path) as worker:
        generate.delay(g.id)
        wait_for(lambda: Generation.objects.get(id=g.id).status == "done", timeout_s=300,
                 what="the generation", log_path=log_path, process=worker)
        first = Generation.objects.get(id=g.id)
        generate.delay(g.id)
        wait_for(lambda: "skipped" in log_path.read_text(), timeout_s=60,
                 what="the redelivered task to be skipped", log_path=log_path, process=worker)
    again = Generation.objects.get(id=g.id)
    assert (again.text, again.attempts, again.finished_at) == (first.text, 1, first.finished_at)
