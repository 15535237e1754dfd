"""Study lifecycle: create a draft, launch it, pause or close it."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from annotations.conditions import ModelChoice
from annotations.models import Condition, Criterion, GoldAnswer, Item, ModelEntry, Study
from annotations.selectors import calibration_state, problems_drawn, study_progress


def study_create(
    *,
    fields: dict,
    conditions: list[tuple[str, dict]],
    criteria: list[dict],
    models: dict[str, ModelChoice] | None = None,
    datasets: Sequence[str] = (),
    task_contains: str = "",
    prompt_contains: str = "",
    item_count: int = 0,
    seed: int = 0,
    prompts: list[str] | None = None,
) -> Study:
    """A draft study with its conditions (in the given order), criteria (`Criterion`
    fields: name, question, required, cant_judge) and items.

    Items: from each of `datasets`, `item_count` problems matching the filters, drawn with
    `seed` (the same seed draws the same problems), each asked in its data set's prompt, plus
    any free-text `prompts`, asked as written. `models`: the weights a condition runs, by
    condition name (registry keys, checked by the form; absent: the default model). All of
    it, or nothing (one transaction)."""
    models = models or {}
    entries = {e.key: e for e in ModelEntry.objects.filter(key__in={
        key for choice in models.values() for key in (choice.model, choice.aligned) if key
    })}
    with transaction.atomic():
        study = Study.objects.create(status=Study.Status.DRAFT, **fields)
        Condition.objects.bulk_create(
            Condition(study=study, name=name, policy=policy, position=position,
                      **_condition_model(models.get(name), entries))
            for position, (name, policy) in enumerate(conditions)
        )
        Criterion.objects.bulk_create(
            Criterion(study=study, position=position, **criterion)
            for position, criterion in enumerate(criteria)
        )
        items = [
            p.new_item(study)
            for dataset in datasets
            for p in problems_drawn(
                dataset=dataset, task_contains=task_contains, prompt_contains=prompt_contains,
                item_count=item_count, seed=seed,
            )
        ]
        items += [
            Item(study=study, dataset="custom", task_id=f"custom/{i}", prompt=prompt)
            for i, prompt in enumerate(prompts or [])
        ]
        Item.objects.bulk_create(items)
    return study


def _condition_model(choice: ModelChoice | None, entries: dict[str, ModelEntry]) -> dict:
    if choice is None:
        return {}
    return {
        "model": entries.get(choice.model),  # None for the default model
        "aligned_model": entries.get(choice.aligned) if choice.aligned else None,
        "alignment_lambda": choice.alignment_lambda,
    }


def study_launch(*, study: Study) -> list[str]:
    """Open the study for rating, or return why not (and change nothing).

    Refuses while a condition is being calibrated, while generations are missing, waiting,
    running or awaiting their Pass@1 check, when there are no pairs, or when gold items are
    asked for but none exist."""
    if study.status == Study.Status.CLOSED:
        return ["The study is closed."]
    reasons = []
    if study.conditions.count() < 2:
        reasons.append("It needs at least two conditions.")
    if not study.items.exists():
        reasons.append("It has no items.")
    reasons += calibration_state(study).launch_blockers()
    progress = study_progress(study)
    if progress.total == 0:
        reasons.append(
            "Generations have not been started (use “Create and enqueue missing generations” "
            "on the study page)."
        )
    elif not progress.finished:
        waiting = progress.total - progress.done - progress.failed - progress.cancelled
        reasons.append(
            f"Generations are not complete: {progress.done} of {progress.total} done, "
            f"{waiting} still waiting or running"
            + (f", {progress.checks_pending} Pass@1 checks pending." if progress.checks_pending
               else ".")
        )
    if progress.total and not study.pairs.exists():
        reasons.append("No pairs could be formed from the finished generations.")
    if study.gold_rate > 0 and not GoldAnswer.objects.filter(pair__study=study).exists():
        reasons.append(
            "A gold rate is set but there is no gold pair (setup page: Attention checks)."
        )
    if reasons:
        return reasons
    Study.objects.filter(id=study.id).update(status=Study.Status.OPEN)
    study.status = Study.Status.OPEN
    return []


def study_status_set(*, study: Study, status: str) -> bool:
    """Pause an open study, or close a study for good. Returns whether it changed."""
    allowed = {
        Study.Status.PAUSED: [Study.Status.OPEN],
        Study.Status.CLOSED: [Study.Status.DRAFT, Study.Status.OPEN, Study.Status.PAUSED],
    }
    if status not in allowed:
        raise ValueError(f"cannot set status {status!r} here")
    changed = Study.objects.filter(id=study.id, status__in=allowed[status]).update(status=status)
    if changed:
        study.status = status
    return bool(changed)


