"""Writes of pairs, assignments and judgments. Views and commands call these.

Generation writes (leases, Pass@1 checks, the problem library) live in pipeline.py."""

from __future__ import annotations

import logging
import random

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from annotations.models import Assignment, Generation, Item, Judgment, Pair, Study

log = logging.getLogger(__name__)


def pairs_create(*, item: Item) -> int:
    """Pair up the item's finished generations, one pair per condition pair.

    `generation_a` is the one whose condition comes first in study order.
    Idempotent: existing pairs are kept. Returns how many were created."""
    done = list(
        item.generations.filter(status=Generation.Status.DONE, sample_index=0)
        .select_related("condition")
        .order_by("condition__position", "condition_id")
    )
    rows = [
        Pair(study_id=item.study_id, item=item, generation_a=a, generation_b=b)
        for i, a in enumerate(done)
        for b in done[i + 1 :]
    ]
    before = Pair.objects.filter(item=item).count()
    Pair.objects.bulk_create(rows, ignore_conflicts=True)
    return Pair.objects.filter(item=item).count() - before


def assignment_next(
    *, study: Study, rater: AbstractBaseUser, rng: random.Random | None = None
) -> Assignment | None:
    """The rater's open assignment in this study, or a new one, or None when done.

    New work goes to the pair with the fewest raters so far (below the study's
    overlap), never a pair this rater has seen; the side is randomized and kept."""
    open_assignment = (
        Assignment.objects.filter(pair__study=study, rater=rater, judgment__isnull=True)
        .select_related("pair")
        .first()
    )
    if open_assignment is not None:
        return open_assignment
    rng = rng or random.SystemRandom()
    candidates = list(
        Pair.objects.filter(study=study)
        .exclude(assignments__rater=rater)
        .annotate(n_raters=Count("assignments"))
        .filter(n_raters__lt=study.overlap)
        .values_list("id", "n_raters")
    )
    if not candidates:
        return None
    fewest = min(n for _, n in candidates)
    pair_ids = [pair_id for pair_id, n in candidates if n == fewest]
    rng.shuffle(pair_ids)
    for pair_id in pair_ids:
        try:
            with transaction.atomic():
                return Assignment.objects.create(
                    pair_id=pair_id, rater=rater, a_on_left=rng.random() < 0.5
                )
        except IntegrityError:
            # A second tab of the same rater took this pair a moment ago.
            continue
    return assignment_next(study=study, rater=rater, rng=rng)


_WINNER_BY_SIDE = {
    # (choice, a_on_left) -> winner in condition order
    ("left", True): Judgment.Winner.A,
    ("left", False): Judgment.Winner.B,
    ("right", True): Judgment.Winner.B,
    ("right", False): Judgment.Winner.A,
    ("tie", True): Judgment.Winner.TIE,
    ("tie", False): Judgment.Winner.TIE,
}


def judgment_submit(
    *, assignment: Assignment, choice: str, time_on_task_ms: int | None = None
) -> tuple[Judgment, bool]:
    """Record the rater's choice for an assignment, once.

    Returns (judgment, created). A repeated submit (double click, two tabs,
    replay) returns the first judgment unchanged with created=False."""
    if choice not in Judgment.Choice.values:
        raise ValueError(f"unknown choice {choice!r}; expected one of {Judgment.Choice.values}")
    try:
        with transaction.atomic():
            judgment = Judgment.objects.create(
                assignment=assignment,
                choice=choice,
                winner=_WINNER_BY_SIDE[(choice, assignment.a_on_left)],
                time_on_task_ms=time_on_task_ms,
            )
            Assignment.objects.filter(id=assignment.id).update(completed_at=timezone.now())
            return judgment, True
    except IntegrityError:
        return Judgment.objects.get(assignment=assignment), False
