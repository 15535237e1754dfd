"""Study fixtures built through the real models and services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from annotations import services
from annotations.models import (
    Assignment,
    Condition,
    Enrolment,
    Generation,
    GoldAnswer,
    Item,
    Pair,
    Study,
)


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
    services.generations_create(study=study)
    for g in Generation.objects.filter(item__study=study).select_related("condition", "item"):
        g.status = Generation.Status.DONE
        g.text = f"def f():\n    return {g.item.task_id!r}  # output {g.id}"
        g.active_fraction = 1.0
        g.save()
    for item in study.items.all():
        services.pairs_create(item=item)


def make_gold(study: Study, *, rate: float, block_after: int) -> Pair:
    Study.objects.filter(id=study.id).update(gold_rate=rate, gold_block_after=block_after)
    study.refresh_from_db()
    pair = Pair.objects.filter(study=study).first()
    GoldAnswer.objects.create(pair=pair, winner="a")
    return pair


def expire(assignment: Assignment) -> None:
    Assignment.objects.filter(id=assignment.id).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )
    assignment.refresh_from_db()


# Each state the one rule (`judging_refusal`) refuses, set on a study with a pair leased.
REFUSALS = {
    services.Refusal.NOT_STARTED: lambda study, enrolment: Study.objects.filter(
        id=study.id).update(status=Study.Status.DRAFT),
    services.Refusal.STOPPED: lambda study, enrolment: Study.objects.filter(
        id=study.id).update(status=Study.Status.PAUSED),
    services.Refusal.NO_CONSENT: lambda study, enrolment: Study.objects.filter(
        id=study.id).update(consent_text="We record your choices."),
    services.Refusal.BLOCKED: lambda study, enrolment: Enrolment.objects.filter(
        id=enrolment.id).update(blocked_at=timezone.now()),
}


def refused(assignment: Assignment, refusal: services.Refusal) -> Enrolment:
    """Put the assignment's study and rater in the state `refusal` names; their enrolment."""
    study = assignment.pair.study
    enrolment = services.enrolment_get(study=study, rater=assignment.rater)
    REFUSALS[refusal](study, enrolment)
    study.refresh_from_db()
    enrolment.refresh_from_db()
    return enrolment


@pytest.fixture
def tiny_model_configured(settings, tmp_path):
    """The configured model is the tiny random LLaMA (context 256 tokens, a word tokenizer),
    saved as a Hugging Face directory."""
    from tests.inference.conftest import tiny_model, tiny_tokenizer

    path = tmp_path / "tiny-llama"
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    settings.MODEL_PATH = str(path)
    settings.MODEL_CACHE_DIR = tmp_path / "cache"
    return path


@pytest.fixture
def users(db):
    User = get_user_model()
    staff = User.objects.create_user("staff", password="pw-staff-123", is_staff=True)
    alice = User.objects.create_user("alice", password="pw-alice-123")
    bob = User.objects.create_user("bob", password="pw-bob-123")
    return staff, alice, bob


@pytest.fixture
def leased(users) -> Assignment:
    """Alice's first pair in a one-item study she alone rates (study: `.pair.study`)."""
    _, alice, _ = users
    study = make_study(n_items=1, overlap=1, raters=[alice])
    finish_generations(study)
    return services.assignment_next(study=study, rater=alice)
