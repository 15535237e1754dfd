"""The worker's model cache: each model a condition runs, loaded and placed once per
process, with what loading it cost.

A condition runs the deployment's own model (MODEL_PATH, key ``default``), a registered
model (its path on this machine), or an alignment vector between two of them, whose merged
weights ``inference.merge`` builds once per (base, aligned, λ) and caches on disk by the two
models' fingerprints, so no entry is ever served for other weights."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from django.conf import settings

from annotations.models import Condition
from inference.generate import generate
from inference.hot_cold import model_place
from inference.kernels import compiled_kernels
from inference.loading import LoadedModel, load_model, placed_dtype
from inference.merge import merge
from inference.model_info import default_model_path
from inference.policies import DensePolicy
from inference.provenance import resident_bytes


@dataclass(frozen=True)
class ModelWeights:
    """The weights a condition runs: ``path`` ("" = the shipped model), and for an
    alignment vector the aligned model's path and λ (θ = θ_path + λ·(θ_aligned − θ_path))."""

    key: str
    path: str
    aligned_path: str = ""
    alignment_lambda: float | None = None


@dataclass(frozen=True)
class ModelLoad:
    """A model as this worker holds it, and what holding it cost: seconds to merge (when an
    alignment vector's weights were built rather than read from the cache) and load, and
    the worker's resident-set growth while loading (None without /proc)."""

    loaded: LoadedModel
    load_s: float
    merge_built: bool
    load_rss_bytes: int | None

    def facts(self) -> dict:
        return {"model_load_s": self.load_s, "model_merge_built": self.merge_built,
                "model_load_rss_bytes": self.load_rss_bytes}


def condition_weights(condition: Condition) -> ModelWeights:
    """What `condition` runs (read its `model` and `aligned_model` with it)."""
    base = condition.model.path if condition.model_id else settings.MODEL_PATH
    if not condition.aligned_model_id:
        return ModelWeights(key=condition.model_key, path=base)
    return ModelWeights(
        key=condition.model_key, path=base, aligned_path=condition.aligned_model.path,
        alignment_lambda=condition.alignment_lambda,
    )


@functools.cache
def model_load(weights: ModelWeights) -> ModelLoad:
    """`weights` loaded (MODEL_DTYPE, MODEL_QUANTIZE) and placed (MODEL_DEVICE; the
    deployment's model may be split by MODEL_PLAN, a plan made for it alone) once per worker
    process, then reused."""
    rss_before = resident_bytes()
    start = time.perf_counter()
    path, built = weights.path, False
    if weights.aligned_path:
        merged = merge(weights.path or default_model_path(), weights.aligned_path,
                       weights.alignment_lambda, cache_dir=settings.MODEL_CACHE_DIR)
        path, built = str(merged.path), merged.built
    plan = settings.MODEL_PLAN if weights.path == settings.MODEL_PATH and not built and (
        not weights.aligned_path) else ""
    loaded = _load(path, settings.MODEL_DTYPE, settings.MODEL_QUANTIZE, settings.MODEL_DEVICE,
                   plan, settings.MODEL_HOT_DEVICE, settings.MODEL_COLD_DEVICE)
    rss_after = resident_bytes()
    return ModelLoad(
        loaded=loaded, load_s=time.perf_counter() - start, merge_built=built,
        load_rss_bytes=None if rss_before is None or rss_after is None
        else max(rss_after - rss_before, 0),
    )


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


def loaded_model(weights: ModelWeights | None = None) -> LoadedModel:
    """The model of `weights` (default: the deployment's own), loaded once per process."""
    return model_load(weights or ModelWeights(key="default", path=settings.MODEL_PATH)).loaded
