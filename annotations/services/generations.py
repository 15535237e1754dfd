"""Writes of the generation pipeline: a study's generations, their leases and outputs, and
the divergence from dense a worker measures. Sending work to the worker queue is `tasks`'
(`tasks.generations_enqueue`), which calls in here."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from annotations.models import ExecutionJob, Generation, Study
from annotations.selectors import DIVERGENCE_KEYS
from annotations.services.pairs_assignments import pairs_create

if TYPE_CHECKING:  # the web process never loads torch
    from inference.generate import GenerationResult

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
    return Generation.objects.select_related(
        "item", "condition", "item__study", "condition__model", "condition__aligned_model"
    ).get(id=generation_id)


def generation_complete(
    *, generation: Generation, result: GenerationResult, model_fingerprint: str,
    provenance: dict | None = None, rss_start_bytes: int | None = None,
) -> bool:
    """Store a finished output with where it ran (`provenance`) and the worker's resident
    set at its start; returns False if the generation was no longer ours."""
    telemetry = result.to_dict()
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
