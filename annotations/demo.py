"""The demo study that `make run` seeds: HumanEval and MBPP prompts, dense against a small
sweep of two policy families at target sparsities (calibrated by the worker at start)."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from annotations import services
from annotations.conditions import BuiltCondition, build_sweep
from annotations.models import Condition, Item, Problem, Study
from evaluation import datasets

DEMO_STUDY_NAME = "Demo: HumanEval and MBPP under hot-neuron thresholds"
# What raters see instead of the name, which says what the study varies.
DEMO_RATER_TITLE = "Compare two answers to a programming task"
# Target sparsities of the demo's sweep: two points per family keep `make run`'s
# generations within about ten minutes on two CPU cores.
DEMO_SPARSITIES = "25, 50"
DEMO_SWEEPS = [
    ("static", {}),  # one threshold on the MLP activation h, every layer
    ("static", {"site": "input"}),  # on every projection's input (TEAL's site)
]


def demo_conditions() -> list[BuiltCondition]:
    """Dense, then each sweep of `DEMO_SWEEPS` at `DEMO_SPARSITIES`."""
    sweeps = [
        build_sweep(kind=kind, values=values, sparsities=DEMO_SPARSITIES)
        for kind, values in DEMO_SWEEPS
    ]
    return [BuiltCondition(name="dense", policy={"kind": "dense"})] + sum(sweeps, [])


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


def library_problems(dataset: str, n: int) -> list[Problem]:
    """The first n problems of a shipped data set (``humaneval`` or ``mbpp``), imported
    into the library first."""
    loaders = {"humaneval": datasets.load_humaneval, "mbpp": datasets.load_mbpp}
    problems = loaders[dataset]()
    services.problems_import(tasks=problems)
    ids = [p.task_id for p in problems[:n]]
    by_id = {p.task_id: p for p in Problem.objects.filter(dataset=dataset, task_id__in=ids)}
    return [by_id[task_id] for task_id in ids]


@transaction.atomic
def demo_seed(*, n_items: int = 4, max_new_tokens: int = 128) -> Study:
    """Create (or find) the demo accounts and study: `n_items` prompts, half HumanEval and
    half MBPP, and `demo_conditions` (their calibrations waiting for the worker; send
    them with `tasks.calibrations_enqueue`). Running it again changes nothing."""
    _ensure_user(DEMO_ADMIN)
    rater = _ensure_user(DEMO_RATER)
    study, created = Study.objects.get_or_create(
        name=DEMO_STUDY_NAME,
        defaults={
            "rater_title": DEMO_RATER_TITLE,
            "description": "Which output do raters prefer as cold neurons are skipped?",
            "status": Study.Status.OPEN,
            "overlap": 1,
            "max_new_tokens": max_new_tokens,
            "pair_design": Study.PairDesign.VS_FIRST,
        },
    )
    study.raters.add(rater)
    if created:
        conditions = demo_conditions()
        for position, built in enumerate(conditions):
            Condition.objects.create(
                study=study, name=built.name, policy=built.policy, position=position
            )
        services.calibrations_create(study=study, built=conditions)
        problems = library_problems("humaneval", n_items - n_items // 2) + library_problems(
            "mbpp", n_items // 2
        )
        Item.objects.bulk_create(
            problem.new_item(study) for problem in problems
        )
    return study
