"""Study fixtures built through the real models and services."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from annotations import pipeline, services
from annotations.models import Condition, Generation, Item, Study


def make_study(*, n_items: int = 2, conditions=None, overlap: int = 2, raters=(), name="Study"):
    study = Study.objects.create(name=name, status=Study.Status.OPEN, overlap=overlap)
    conditions = conditions or [
        ("dense", {"kind": "dense"}),
        ("static t=0.05", {"kind": "static", "threshold": 0.05}),
        ("dynamic t=0.05", {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1.0}),
    ]
    for position, (cname, policy) in enumerate(conditions):
        Condition.objects.create(study=study, name=cname, policy=policy, position=position)
    for i in range(n_items):
        Item.objects.create(
            study=study, dataset="humaneval", task_id=f"HumanEval/{i}", prompt=f"Prompt <b>{i}</b>"
        )
    study.raters.add(*raters)
    return study


def finish_generations(study: Study) -> None:
    """Mark every generation done with a distinct text and pair them up, as the worker would."""
    pipeline.generations_create(study=study)
    for g in Generation.objects.filter(item__study=study).select_related("condition", "item"):
        g.status = Generation.Status.DONE
        g.text = f"def f():\n    return {g.item.task_id!r}  # output {g.id}"
        g.active_fraction = 1.0
        g.save()
    for item in study.items.all():
        services.pairs_create(item=item)


@pytest.fixture
def users(db):
    User = get_user_model()
    staff = User.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    alice = User.objects.create_user("alice", password="pw-alice-123")
    bob = User.objects.create_user("bob", password="pw-bob-123")
    return staff, alice, bob
