"""The worker's handle on the inference engine: one loaded model per process."""

from __future__ import annotations

import functools

from django.conf import settings

from inference.hot_cold import model_place
from inference.loading import LoadedModel, load_model


@functools.cache
def _load(
    path: str, dtype: str, device: str, plan: str, hot_device: str, cold_device: str
) -> LoadedModel:
    loaded = load_model(path or None, dtype=dtype, cache_dir=settings.MODEL_CACHE_DIR)
    model_place(
        loaded.model, fingerprint=loaded.fingerprint, device=device, plan=plan or None,
        hot_device=hot_device, cold_device=cold_device,
    )
    return loaded


def loaded_model() -> LoadedModel:
    """The configured model, loaded and placed (MODEL_DEVICE, or MODEL_PLAN with
    MODEL_HOT_DEVICE / MODEL_COLD_DEVICE) once per worker process, then reused."""
    return _load(
        settings.MODEL_PATH, settings.MODEL_DTYPE, settings.MODEL_DEVICE, settings.MODEL_PLAN,
        settings.MODEL_HOT_DEVICE, settings.MODEL_COLD_DEVICE,
    )
