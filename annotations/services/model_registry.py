"""The model registry's writes: staff register a model, a worker records what it found, and
workers say which models they serve (their heartbeat)."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotations.models import ModelEntry, WorkerHeartbeat


def model_register(
    *, key: str, path: str, display_name: str = "", created_by: AbstractBaseUser | None = None
) -> ModelEntry:
    """A new model, pending until a worker serving `key` validates it (`tasks.models_validate`
    sends that job once the transaction commits). `key` and `path` are checked by the form."""
    return ModelEntry.objects.create(
        key=key, path=path.strip(), display_name=display_name, created_by=created_by
    )


def model_revalidate(*, entry: ModelEntry) -> bool:
    """Back to pending (the path's file may have been fixed or replaced); False if it was
    pending already."""
    return bool(ModelEntry.objects.filter(id=entry.id).exclude(
        status=ModelEntry.Status.PENDING
    ).update(status=ModelEntry.Status.PENDING, error="", description={}))


def model_validation_record(*, entry_id: int, description: dict | None, error: str = "") -> bool:
    """Store a worker's verdict on a pending model: valid with `description` (what
    `inference.model_info.describe` read), or invalid with `error`. Guarded: a verdict on a
    model no longer pending (re-registered, judged by another worker) changes nothing."""
    if description is not None:
        update = {"status": ModelEntry.Status.VALID, "description": description, "error": ""}
    else:
        update = {"status": ModelEntry.Status.INVALID, "description": {}, "error": error[:2000]}
    return bool(ModelEntry.objects.filter(
        id=entry_id, status=ModelEntry.Status.PENDING
    ).update(**update))


def worker_heartbeat_record(*, name: str, model_keys: list[str], now: datetime) -> None:
    """The worker `name` serves `model_keys` as of `now` (one row per worker, kept fresh)."""
    with transaction.atomic():
        updated = WorkerHeartbeat.objects.filter(name=name).update(
            model_keys=model_keys, seen_at=now
        )
        if not updated:
            WorkerHeartbeat.objects.get_or_create(
                name=name, defaults={"model_keys": model_keys, "started_at": now, "seen_at": now}
            )


def worker_heartbeat_forget(*, name: str) -> None:
    """The worker stopped cleanly: it serves nothing any more."""
    WorkerHeartbeat.objects.filter(name=name).delete()
