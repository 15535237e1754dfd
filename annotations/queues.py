"""Which Celery queue a model's work travels on. No Django here: the Celery app reads it
when a worker chooses its queues (`webapp.celery`), before any model is imported.

Each registered model has its own generation queue, so a worker holding a model takes only
that model's generations and calibrations; the deployment's own model (MODEL_PATH, key
``default``) keeps the queue every worker consumed before the registry."""

from __future__ import annotations

DEFAULT_MODEL_KEY = "default"
DEFAULT_QUEUE = "generation"


def generation_queue(model_key: str) -> str:
    """``generation`` for the default model, ``generation.<key>`` for a registered one."""
    return DEFAULT_QUEUE if model_key == DEFAULT_MODEL_KEY else f"{DEFAULT_QUEUE}.{model_key}"


def worker_queues(asked: list[str], model_keys: list[str]) -> list[str]:
    """The queues a worker started with ``-Q asked`` and ``MODEL_KEYS=model_keys`` consumes:
    ``generation`` in ``asked`` stands for the generation queues of its models (the default
    model's only when ``default`` is among them); other queues are kept as asked."""
    if DEFAULT_QUEUE not in asked:
        return list(asked)
    others = [q for q in asked if q != DEFAULT_QUEUE]
    return [generation_queue(key) for key in model_keys] + others
