"""Writes that touch the study's tables. Views, tasks and commands call these."""

from __future__ import annotations

import functools
import logging
import random
from datetime import timedelta
from typing import TYPE_CHECKING

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from annotations.models import Assignment, Generation, Item, Judgment, Pair, Study

if TYPE_CHECKING:  # the web process never loads torch
    from inference.generate import GenerationResult

log = logging.getLogger(__name__)

# How long a worker may hold a generation before another may take it over.
GENERATION_LEASE = timedelta(minutes=15)
# A generation whose worker died this many times is marked failed, not retried.
MAX_GENERATION_ATTEMPTS = 2


def generations_create(*, study: Study, sample_index: int = 0, seed: int = 0) -> int:
    """Create the missing (item × condition) generations of a study.

    Returns how many rows were created; existing rows are left as they are."""
    existing = set(
        Generation.objects.filter(
            item__study=study, sample_index=sample_index, seed=seed
        ).values_list("item_id", "condition_id")
    )
    rows = [
        Generation(item=item, condition=condition, sample_index=sample_index, seed=seed)
        for item in study.items.all()
        for condition in study.conditions.all()
        if (item.id, condition.id) not in existing
    ]
    Generation.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _claimable(now) -> Q:
    return Q(status=Generation.Status.PENDING) | Q(
        status=Generation.Status.RUNNING, lease_until__lt=now
    )


def generations_enqueue(*, study: Study) -> int:
    """Send every unfinished generation of the study to the worker queue.

    Safe to call repeatedly: a task for a generation that is done, or held by a
    live worker, does nothing. Returns the number of tasks sent."""
    from annotations.tasks import generate

    ids = list(
        Generation.objects.filter(_claimable(timezone.now()), item__study=study).values_list(
            "id", flat=True
        )
    )
    for generation_id in ids:
        transaction.on_commit(functools.partial(generate.delay, generation_id))
    return len(ids)


def generation_claim(*, generation_id: int) -> Generation | None:
    """Take a generation for this worker, or None if it is done or held elsewhere.

    A guarded update, so two workers handed the same task cannot both run it."""
    now = timezone.now()
    claimed = Generation.objects.filter(
        _claimable(now), id=generation_id, attempts__lt=MAX_GENERATION_ATTEMPTS
    ).update(
        status=Generation.Status.RUNNING,
        lease_until=now + GENERATION_LEASE,
        attempts=F("attempts") + 1,
    )
    if claimed == 0:
        # Still claimable but out of attempts: its workers kept dying; say so.
        Generation.objects.filter(_claimable(now), id=generation_id).update(
            status=Generation.Status.FAILED,
            error=f"gave up: {MAX_GENERATION_ATTEMPTS} attempts did not finish (worker lost)",
        )
        return None
    return Generation.objects.select_related("item", "condition", "item__study").get(
        id=generation_id
    )


def generation_complete(
    *, generation: Generation, result: GenerationResult, model_fingerprint: str
) -> bool:
    """Store a finished output; returns False if the generation was no longer ours."""
    telemetry = result.to_json()
    with transaction.atomic():
        stored = Generation.objects.filter(
            id=generation.id, status=Generation.Status.RUNNING
        ).update(
            status=Generation.Status.DONE,
            text=result.text,
            model_fingerprint=model_fingerprint,
            prompt_tokens=result.prompt_tokens,
            new_tokens=result.new_tokens,
            latency_s=result.latency_s,
            tokens_per_s=result.tokens_per_s,
            peak_rss_bytes=result.peak_rss_bytes,
            active_fraction=result.active_fraction,
            telemetry=telemetry,
            error="",
            lease_until=None,
            finished_at=timezone.now(),
        )
        if stored:
            pairs_create(item=generation.item)
    return bool(stored)


def generation_fail(*, generation: Generation, error: str) -> None:
    """Record a permanent failure with its reason (shown on the study page)."""
    Generation.objects.filter(id=generation.id, status=Generation.Status.RUNNING).update(
        status=Generation.Status.FAILED, error=error[:2000], lease_until=None
    )


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
