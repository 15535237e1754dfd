"""The worker's model cache: the configured model, loaded and placed once per process."""

from __future__ import annotations

import functools

from django.conf import settings

from inference.generate import generate
from inference.hot_cold import model_place
from inference.kernels import compiled_kernels
from inference.loading import LoadedModel, load_model, placed_dtype
from inference.policies import DensePolicy


@functools.cache
def _load(
    path: str, dtype: str, quantize: str, device: str, plan: str, hot_device: str,
    cold_device: str,
) -> LoadedModel:
    dtype = placed_dtype(dtype, device=device, split=bool(plan))
    loaded = load_model(
        path or None, dtype=dtype, cache_dir=settings.MODEL_CACHE_DIR, quantize=quantize or None
    )
    model_place(
        loaded.model, fingerprint=loaded.fingerprint, device=device, plan=plan or None,
        hot_device=hot_device, cold_device=cold_device,
    )
    warm(loaded)
    return loaded


def warm(loaded: LoadedModel) -> None:
    """Build the compiled kernels and read every weight once before any generation is timed:
    otherwise the first sparse output of a worker pays the kernel build (~40 s on a new
    machine) and the first output of all pays the weights' page faults, and both land in that
    condition's latency."""
    compiled_kernels()
    generate(loaded, "Hello.", DensePolicy(), max_new_tokens=2)


def loaded_model() -> LoadedModel:
    """The configured model (MODEL_PATH, MODEL_DTYPE, MODEL_QUANTIZE), loaded and placed
    (MODEL_DEVICE, or MODEL_PLAN with MODEL_HOT_DEVICE / MODEL_COLD_DEVICE) once per worker
    process, then reused."""
    return _load(
        settings.MODEL_PATH, settings.MODEL_DTYPE, settings.MODEL_QUANTIZE,
        settings.MODEL_DEVICE, settings.MODEL_PLAN, settings.MODEL_HOT_DEVICE,
        settings.MODEL_COLD_DEVICE,
    )
