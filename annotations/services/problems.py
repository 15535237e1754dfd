"""Writes of the problem library: a loaded data set's tasks become `Problem` rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction

from annotations import context_limit
from annotations.models import Problem, Study
from evaluation import datasets
from evaluation.prompts import task_prompt

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

