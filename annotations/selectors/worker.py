"""Reads of the worker's jobs: the prompts a calibration profiles and the outputs whose
divergence from dense a finished output makes measurable."""

from __future__ import annotations

from annotations.models import (
    Calibration,
    Generation,
    Problem,
    Study,
)

# Prompts profiled per calibration: enough for stable quantiles of |h| (every token of every
# layer counts), few enough to finish in a minute or two on a CPU.
MAX_PROMPTS = 16


def calibration_prompts(*, study: Study, prompt_set: str) -> list[str]:
    """The prompts a calibration profiles: the study's items, or HumanEval's from the
    problem library (the same draw every time)."""
    if prompt_set == Calibration.PromptSet.HUMANEVAL:
        # Asked as a study item would be, so the profile sees the prompts it will serve.
        library = Problem.objects.filter(dataset="humaneval").order_by("id")[:MAX_PROMPTS]
        prompts = [problem.new_item(study).prompt for problem in library]
    else:
        prompts = list(study.items.order_by("id").values_list("prompt", flat=True)[:MAX_PROMPTS])
    if not prompts:
        raise ValueError(
            f"no prompts to calibrate on ({Calibration.PromptSet(prompt_set).label}: none; "
            "import the data set or add items)"
        )
    return prompts


# The telemetry keys `inference.divergence.divergence_from_dense` fills.
DIVERGENCE_KEYS = ("kl_from_dense", "top1_agreement_with_dense", "divergence_tokens")


def divergence_work(*, generation_id: int) -> list[tuple[int, list[int], dict]]:
    """What a finished output makes measurable: ``(generation id, dense token ids, policy)``
    for each finished sparse output of the same item and sample that has no divergence from
    dense yet, once that item's dense output exists: this output itself when it is sparse,
    the item's earlier sparse outputs when it is the dense one."""
    generation = Generation.objects.select_related("condition").get(id=generation_id)
    # Only outputs of the same weights compare: another model's dense output is no reference.
    siblings = Generation.objects.filter(
        item_id=generation.item_id, sample_index=generation.sample_index,
        status=Generation.Status.DONE, condition__model_id=generation.condition.model_id,
        condition__aligned_model_id=generation.condition.aligned_model_id,
        condition__alignment_lambda=generation.condition.alignment_lambda,
    ).select_related("condition").order_by("condition__position", "id")
    dense = next((g for g in siblings if g.condition.policy.get("kind") == "dense"), None)
    if dense is None or not dense.telemetry.get("token_ids"):
        return []
    targets = [generation] if generation.id != dense.id else [
        g for g in siblings if g.condition.policy.get("kind") != "dense"
    ]
    return [
        (g.id, dense.telemetry["token_ids"], g.condition.policy)
        for g in targets
        if g.condition.policy.get("kind") != "dense" and DIVERGENCE_KEYS[0] not in g.telemetry
    ]
