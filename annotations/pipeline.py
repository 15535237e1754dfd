"""Writes of the generation pipeline: generations and their leases, the problem library,
Pass@1 checks. `services` holds the writes of pairs, assignments and judgments; sending
work to the worker queue is `tasks`' (`tasks.generations_enqueue`), which calls in here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from annotations import context_limit
from annotations.models import Execution, ExecutionJob, Generation, Item, Problem, Study
from annotations.services.pairs_assignments import pairs_create
from evaluation import datasets
from evaluation.prompts import task_prompt
from evaluation.sandbox.outcomes import ExecutionResult

if TYPE_CHECKING:  # the web process never loads torch
    from inference.generate import GenerationResult

log = logging.getLogger(__name__)

# How long a worker may hold a generation (or a Pass@1 check, under the same task time
# limit) before another may take it over.
GENERATION_LEASE = timedelta(seconds=settings.GENERATION_LEASE_S)


def generations_create(*, study: Study) -> int:
    """Create the missing (item × condition × sample) generations of a study.

    Sample i is decoded with seed i, so every output can be reproduced from its row.
    A condition still being calibrated gets its rows when its calibration is done.
    Returns how many rows were created; existing rows are left as they are."""
    existing = set(
        Generation.objects.filter(item__study=study).values_list(
            "item_id", "condition_id", "sample_index", "seed"
        )
    )
    rows = [
        Generation(item=item, condition=condition, sample_index=sample, seed=sample)
        for item in study.items.all()
        for condition in study.conditions.ready()
        for sample in range(study.samples_per_item)
        if (item.id, condition.id, sample, sample) not in existing
    ]
    Generation.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def generation_order(rows: list[tuple[int, int, int, int]]) -> list[int]:
    """The order a worker should generate in, from ``(id, item_id, condition position,
    sample_index)`` rows: sample by sample, item by item, each item's conditions one after
    the other, their order rotated by one for each next item (item 0: A B C, item 1: B C A,
    …). A machine's speed and memory drift over a run (other load, allocator state), and
    running every condition of an item together, in a rotating order, spreads that drift
    evenly over the conditions instead of giving it to whichever ran last."""
    items = {item: i for i, item in enumerate(sorted({r[1] for r in rows}))}
    positions = sorted({r[2] for r in rows})
    rank = {position: i for i, position in enumerate(positions)}

    def key(row: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        _, item, position, sample = row
        turn = (rank[position] - items[item] - sample) % len(positions)
        return sample, items[item], turn, row[0]

    return [row[0] for row in sorted(rows, key=key)]


def generation_claim(*, generation_id: int) -> Generation | None:
    """Take a generation for this worker, or None if it is done or held elsewhere (or its
    workers died too often: then it is failed with the reason). A guarded update, so two
    workers handed the same task cannot both run it."""
    now = timezone.now()
    if not Generation.objects.filter(id=generation_id).claim(
        now=now, lease_until=now + GENERATION_LEASE
    ):
        return None
    return Generation.objects.select_related("item", "condition", "item__study").get(
        id=generation_id
    )


def generation_complete(
    *, generation: Generation, result: GenerationResult, model_fingerprint: str,
    provenance: dict | None = None, rss_start_bytes: int | None = None,
) -> bool:
    """Store a finished output with where it ran (`provenance`) and the worker's resident
    set at its start; returns False if the generation was no longer ours."""
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
            provenance=provenance or {},
            rss_start_bytes=rss_start_bytes,
            error="",
            lease_until=None,
            finished_at=timezone.now(),
        )
        if stored:
            pairs_create(item=generation.item)
            if generation.item.problem_id is not None:
                ExecutionJob.objects.get_or_create(generation_id=generation.id)
    return bool(stored)


# The telemetry keys `inference.divergence.divergence_from_dense` fills.
DIVERGENCE_KEYS = ("kl_from_dense", "top1_agreement_with_dense", "divergence_tokens")


def divergence_work(*, generation_id: int) -> list[tuple[int, list[int], dict]]:
    """What a finished output makes measurable: ``(generation id, dense token ids, policy)``
    for each finished sparse output of the same item and sample that has no divergence from
    dense yet, once that item's dense output exists: this output itself when it is sparse,
    the item's earlier sparse outputs when it is the dense one."""
    generation = Generation.objects.select_related("condition").get(id=generation_id)
    siblings = Generation.objects.filter(
        item_id=generation.item_id, sample_index=generation.sample_index,
        status=Generation.Status.DONE,
    ).select_related("condition").order_by("condition__position", "id")
    dense = next((g for g in siblings if g.condition.policy.get("kind") == "dense"), None)
    if dense is None or not dense.telemetry.get("token_ids"):
        return []
    targets = [generation] if generation.id != dense.id else [
        g for g in siblings if g.condition.policy.get("kind") != "dense"
    ]
    return [
        (g.id, dense.telemetry["token_ids"], g.condition.policy)
        for g in targets
        if g.condition.policy.get("kind") != "dense" and DIVERGENCE_KEYS[0] not in g.telemetry
    ]


def divergence_record(*, generation_id: int, divergence: dict) -> bool:
    """Add `divergence` (`DIVERGENCE_KEYS`) to a finished output's telemetry; False if the
    row is not finished. Only the worker that measured it writes these keys."""
    with transaction.atomic():
        row = Generation.objects.select_for_update().filter(
            id=generation_id, status=Generation.Status.DONE
        ).first()
        if row is None:
            return False
        row.telemetry = {**row.telemetry, **{k: divergence[k] for k in DIVERGENCE_KEYS}}
        row.save(update_fields=["telemetry"])
    return True


def generation_release(*, generation_id: int) -> bool:
    """Give a running generation back at once (its worker stops cold): pending again, no
    lease, the attempt not counted. False if it was no longer running."""
    return bool(Generation.objects.filter(
        id=generation_id, status=Generation.Status.RUNNING
    ).update(status=Generation.Status.PENDING, lease_until=None,
             attempts=Greatest(F("attempts") - 1, 0)))


def generation_fail(*, generation: Generation, error: str) -> None:
    """Record a permanent failure with its reason (shown on the study page)."""
    Generation.objects.filter(id=generation.id, status=Generation.Status.RUNNING).update(
        status=Generation.Status.FAILED, error=error[:2000], lease_until=None
    )


_IMPORT_BATCH = 100
_PROBLEM_FIELDS = ("prompt", "entry_point", "tests", "reference", "metadata", "unavailable_reason")


@dataclass(frozen=True)
class ImportSummary:
    dataset: str
    created: int
    unchanged: int
    unavailable: int


def _row(task: datasets.Task) -> dict:
    return {
        "prompt": task.prompt,
        "entry_point": task.entry_point or "",
        "tests": task.tests,
        "reference": task.reference,
        "metadata": task.metadata,
        "unavailable_reason": task.unavailable_reason or "",
    }


def problems_import(
    *,
    tasks: list[datasets.Task],
    progress: Callable[[int], None] | None = None,
    max_new_tokens: int | None = None,
) -> ImportSummary:
    """Add a loaded data set's tasks to the library as `Problem` rows, all or nothing.

    Problems already there with the same content are left alone, so importing a file
    twice changes nothing. A problem already there with *different* content aborts the
    whole import (studies may rest on the stored version): `datasets.DatasetError`, which
    also lists each new problem whose prompt, as a study asks it, and `max_new_tokens`
    (default: a new study's) do not fit the model's context, by line.
    `progress(n)` is called as each batch of n problems is written."""
    if not tasks:
        raise datasets.DatasetError("(empty)", [(0, "the data set has no problems")])
    names = {t.dataset for t in tasks}
    existing = {
        (p.dataset, p.task_id): p for p in Problem.objects.filter(dataset__in=names)
    }
    new_rows, unchanged, errors = [], 0, []
    for task in tasks:
        stored = existing.get((task.dataset, task.task_id))
        row = _row(task)
        if stored is None:
            new_rows.append(Problem(dataset=task.dataset, task_id=task.task_id, **row))
        elif all(getattr(stored, f) == row[f] for f in _PROBLEM_FIELDS):
            unchanged += 1
        else:
            errors.append(
                (task.line, f"{task.task_id}: already imported with different content")
            )
    errors += _too_long(
        [t for t in tasks if (t.dataset, t.task_id) not in existing and not t.unavailable_reason],
        max_new_tokens or Study._meta.get_field("max_new_tokens").default,
    )
    if errors:
        raise datasets.DatasetError(", ".join(sorted(names)), sorted(errors))
    with transaction.atomic():
        for start in range(0, len(new_rows), _IMPORT_BATCH):
            batch = new_rows[start : start + _IMPORT_BATCH]
            Problem.objects.bulk_create(batch)
            if progress:
                progress(len(batch))
    return ImportSummary(
        dataset=", ".join(sorted(names)),
        created=len(new_rows),
        unchanged=unchanged,
        unavailable=sum(1 for t in tasks if t.unavailable_reason),
    )


def _too_long(tasks: list[datasets.Task], max_new_tokens: int) -> list[tuple[int, str]]:
    """(line, reason) for each task whose prompt does not fit the model's context."""
    refused = context_limit.prompts_overflow(
        [task_prompt(t) for t in tasks], max_new_tokens=max_new_tokens
    )
    return [(t.line, f"{t.task_id}: {why}") for t, why in zip(tasks, refused, strict=True) if why]


def item_task(item: Item) -> datasets.Task | None:
    """The scoring view of an item: its library problem as a task, or None when it has no tests."""
    return None if item.problem is None else item.problem.as_task()


def execution_jobs_create(*, study: Study) -> int:
    """A pending Pass@1 check for every finished, scorable generation of the study that
    has neither a check nor a verdict (`generation_complete` makes them as outputs are
    stored; this catches up rows stored otherwise). Returns how many were created."""
    unchecked = Generation.objects.filter(
        item__study=study,
        status=Generation.Status.DONE,
        item__problem__isnull=False,
        execution__isnull=True,
        execution_job__isnull=True,
    )
    jobs = [ExecutionJob(generation_id=g) for g in unchecked.values_list("id", flat=True)]
    ExecutionJob.objects.bulk_create(jobs, ignore_conflicts=True)
    return len(jobs)


def execution_claim(*, generation_id: int) -> Generation | None:
    """Take the Pass@1 check of a finished, scorable generation for this worker (the rule
    of `generation_claim`); the generation with its problem, or None."""
    now = timezone.now()
    job = ExecutionJob.objects.filter(
        generation_id=generation_id,
        generation__status=Generation.Status.DONE,
        generation__item__problem__isnull=False,
    )
    if not job.claim(now=now, lease_until=now + GENERATION_LEASE):
        return None
    return Generation.objects.select_related("item__problem", "condition").get(id=generation_id)


def execution_record(
    *, generation: Generation, code: str, result: ExecutionResult
) -> tuple[Execution, bool]:
    """Store the Pass@1 check of a generation once, its job done with it; a repeat returns
    the first record."""
    with transaction.atomic():
        execution, created = Execution.objects.get_or_create(
            generation=generation,
            defaults={
                "status": result.status,
                "code": code,
                "stderr": result.stderr[-4000:],
                "duration_s": result.duration_s,
                "containment": result.containment or "",
            },
        )
        # Done whoever held it: a verdict is stored, so nothing is left to run.
        ExecutionJob.objects.filter(generation_id=generation.id).update(
            status=ExecutionJob.Status.DONE, lease_until=None, error=""
        )
    return execution, created


def execution_fail(*, generation_id: int, error: str) -> None:
    """Record why a Pass@1 check could not run (shown on the study page); not retried."""
    ExecutionJob.objects.filter(
        generation_id=generation_id, status=ExecutionJob.Status.RUNNING
    ).update(status=ExecutionJob.Status.FAILED, error=error[:2000], lease_until=None)


def generations_cancel(*, study: Study) -> int:
    """Stop the study's waiting generations; running ones finish. Returns how many."""
    return Generation.objects.filter(
        item__study=study, status=Generation.Status.PENDING
    ).update(status=Generation.Status.CANCELLED)


def generations_resume(*, study: Study) -> int:
    """Make cancelled generations pending again (`tasks.generations_enqueue` sends them).
    Returns how many."""
    return Generation.objects.filter(
        item__study=study, status=Generation.Status.CANCELLED
    ).update(status=Generation.Status.PENDING)
