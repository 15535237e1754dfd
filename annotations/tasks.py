"""Celery tasks: thin shells that take ids and call services."""

from __future__ import annotations

import logging

from celery import shared_task

from annotations import services

log = logging.getLogger(__name__)


@shared_task(queue="generation")
def generate(generation_id: int) -> str:
    """Run the model for one generation row, unless it is done or held elsewhere."""
    generation = services.generation_claim(generation_id=generation_id)
    if generation is None:
        return "skipped"
    try:
        # Imported here so the web process, which only enqueues, never loads torch.
        from annotations.engine import loaded_model
        from inference.generate import generate as run_generation
        from inference.policies import Policy

        policy = Policy.from_json(generation.condition.policy)
        loaded = loaded_model()
        result = run_generation(
            loaded,
            generation.item.prompt,
            policy,
            max_new_tokens=generation.item.study.max_new_tokens,
            seed=generation.seed,
        )
    except Exception as exc:  # recorded on the row and shown on the study page
        log.exception("generation %s failed", generation_id)
        services.generation_fail(generation=generation, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    services.generation_complete(
        generation=generation, result=result, model_fingerprint=loaded.fingerprint
    )
    return "done"


