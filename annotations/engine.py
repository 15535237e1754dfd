"""The worker's handle on the inference engine: one loaded model per process."""

from __future__ import annotations

import functools

from django.conf import settings

from inference.loading import LoadedModel, load_model


@functools.cache
def _load(path: str, dtype: str) -> LoadedModel:
    return load_model(path or None, dtype=dtype, cache_dir=settings.MODEL_CACHE_DIR)


def loaded_model() -> LoadedModel:
    """The configured model, loaded once per worker process and then reused."""
    return _load(settings.MODEL_PATH, settings.MODEL_DTYPE)
