"""The worker's model cache: the configured model, loaded and placed once per process."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from django.conf import settings

from inference.generate import generate
from inference.hot_cold import model_place
from inference.kernels import compiled_kernels
from inference.loading import LoadedModel, load_model
from inference.policies import DensePolicy, Policy
from inference.profile import Profile, calibrated_policy, profile_model


@functools.cache
def _load(
    path: str, dtype: str, device: str, plan: str, hot_device: str, cold_device: str
) -> LoadedModel:
    loaded = load_model(path or None, dtype=dtype, cache_dir=settings.MODEL_CACHE_DIR)
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
    """The configured model, loaded and placed (MODEL_DEVICE, or MODEL_PLAN with
    MODEL_HOT_DEVICE / MODEL_COLD_DEVICE) once per worker process, then reused."""
    return _load(
        settings.MODEL_PATH, settings.MODEL_DTYPE, settings.MODEL_DEVICE, settings.MODEL_PLAN,
        settings.MODEL_HOT_DEVICE, settings.MODEL_COLD_DEVICE,
    )


# Decode steps profiled per prompt: decoding, not only the prompt, is what a policy sparsifies.
CALIBRATION_NEW_TOKENS = 16


def calibration_profile(
    loaded: LoadedModel, prompts: list[str], *, progress: Callable[[float], None]
) -> Profile:
    """The model's activation profile on `prompts`, one prompt at a time so that
    `progress(share done)` can be reported between them."""
    total: Profile | None = None
    for done, prompt in enumerate(prompts, start=1):
        one = profile_model(loaded, [prompt], max_new_tokens=CALIBRATION_NEW_TOKENS)
        total = one if total is None else total.plus(one)
        progress(done / len(prompts))
    assert total is not None, "no prompts to profile"
    return total


def calibrated_policy_for(
    profile: Profile, policy: dict, target_sparsity: float
) -> tuple[dict, float]:
    """`policy` (a calibratable family, without its thresholds) with thresholds that zero a
    `target_sparsity` share of the activation magnitudes at its site on the profile, and the
    sparsity they give there.

    Static and dynamic get one threshold for every layer (the quantile of all layers'
    magnitudes pooled); calibrated gets each layer's own quantile (TEAL; at the ``input``
    site one per layer and projection input)."""
    kind, site = policy["kind"], policy.get("site", "h")
    if kind == "calibrated":
        calibrated = calibrated_policy(profile, target_sparsity, site)
        thresholds = list(calibrated.thresholds)
        chosen = {**policy, **calibrated.to_json()}
    elif kind in ("static", "dynamic"):
        hist = profile.site_histogram(site)
        pooled = dataclasses.replace(profile, hist=hist.reshape(-1, hist.shape[-1]).sum(
            dim=0, keepdim=True))
        threshold = pooled.quantiles(target_sparsity)[0] if target_sparsity > 0 else 0.0
        per_layer = (threshold,) * hist.shape[1] if hist.dim() == 3 else threshold
        thresholds = [per_layer] * profile.num_layers
        chosen = {**policy, "threshold": threshold}
    else:
        raise ValueError(f"policy {kind!r} is not calibrated to a sparsity")
    active = profile.active_fraction(thresholds, site)
    return Policy.from_json(chosen).to_json(), 1.0 - sum(active) / len(active)
