"""Tokens/s on the shipped model: plain ``transformers`` ``generate`` (dense) against our engine
under each policy kind, so the engine's own overhead shows.

    python -m benchmarks decode [--max-new-tokens 32] [--reps 1] [--json]
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from inference.generate import generate, prompt_ids
from inference.loading import load_model
from inference.policies import (
    BudgetPolicy,
    DensePolicy,
    DynamicPolicy,
    PredictorPolicy,
    StaticPolicy,
)
from inference.predictor import Predictors, predictor_policy_for_recall
from inference.profile import Profile, calibrated_policy

PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring."


def _policies(loaded, profile: Path | None, predictor: Path | None) -> dict:
    policies = {
        "dense": DensePolicy(),
        "static": StaticPolicy(0.05),
        "dynamic": DynamicPolicy(0.05, 1.0),
        "budget": BudgetPolicy(0.5),
    }
    profile = profile or Path("var/profiles/smollm2-he8.safetensors")
    if profile.is_file():
        loaded_profile = Profile.load(profile)
        if loaded_profile.fingerprint == loaded.fingerprint:
            policies["calibrated"] = calibrated_policy(loaded_profile, 0.5)
    predictor = predictor or Path("var/predictors/smollm2-r64.safetensors")
    if predictor.is_file():
        predictors = Predictors.load(predictor)
        if predictors.fingerprint == loaded.fingerprint:
            policies["predictor"] = PredictorPolicy(0.5, str(predictor))
            if "0.95" in predictors.metrics.get("thresholds_for_recall", {}):
                policies["pred r0.95"] = predictor_policy_for_recall(
                    predictors, str(predictor), 0.95
                )
    return policies


def bench_decode(
    model_path: Path | None = None,
    *,
    max_new_tokens: int = 32,
    reps: int | None = None,
    profile: Path | None = None,
    predictor: Path | None = None,
    cache_dir: Path | None = None,
) -> dict:
    """Tokens/s of plain ``transformers`` ``generate`` (greedy, exactly ``max_new_tokens``) and
    of our engine under each policy (greedy, stops at EOS). Two copies of the model are loaded,
    so the ``transformers`` one is never sparsified. Medians of ``reps`` runs after a warm-up."""
    reps = reps or 1
    plain = load_model(model_path, cache_dir=cache_dir)
    ours = load_model(model_path, cache_dir=cache_dir)
    ids = prompt_ids(plain.tokenizer, PROMPT)
    pad = plain.tokenizer.pad_token_id or plain.tokenizer.eos_token_id

    def hf_run() -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            out = plain.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
            )
            elapsed = time.perf_counter() - start
        return (out.shape[1] - ids.shape[1]) / elapsed

    hf_run()
    hf_tps = statistics.median(hf_run() for _ in range(reps))
    rows = {}
    dense_ids: list[int] = []
    for name, policy in _policies(ours, profile, predictor).items():
        generate(ours, PROMPT, policy, max_new_tokens=2)  # warm-up (and attach predictors)
        results = [
            generate(ours, PROMPT, policy, max_new_tokens=max_new_tokens) for _ in range(reps)
        ]
        result = sorted(results, key=lambda r: r.tokens_per_s)[len(results) // 2]
        if name == "dense":
            dense_ids = result.token_ids
        same = sum(a == b for a, b in zip(result.token_ids, dense_ids, strict=False))
        rows[name] = {
            "policy": policy.to_dict(),
            "tokens_per_s": result.tokens_per_s,
            "relative_to_transformers": result.tokens_per_s / hf_tps,
            "new_tokens": result.new_tokens,
            "ttft_s": result.ttft_s,
            "achieved_sparsity": result.achieved_sparsity,
            "mlp_bytes_skipped_fraction": result.mlp_bytes_skipped_fraction,
            "token_agreement_with_dense": same / max(len(dense_ids), 1),
        }
    return {
        "model": ours.fingerprint,
        "prompt": PROMPT,
        "max_new_tokens": max_new_tokens,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "transformers_dense_tokens_per_s": hf_tps,
        "engine_dense_overhead": hf_tps / rows["dense"]["tokens_per_s"] - 1.0,
        "policies": rows,
    }


def format_decode(r: dict) -> str:
    lines = [
        f"{r['model']}: {r['max_new_tokens']} new tokens, {r['threads']} threads, "
        f"medians of {r['reps']}",
        f"transformers generate (dense): {r['transformers_dense_tokens_per_s']:.2f} tok/s; "
        f"engine dense overhead {r['engine_dense_overhead']:+.1%}",
        "policy      tok/s  vs HF  sparsity  bytes skipped  agreement  ttft s",
    ]
    for name, row in r["policies"].items():
        lines.append(
            f"{name:10s} {row['tokens_per_s']:6.2f}  {row['relative_to_transformers']:4.2f}x "
            f"{row['achieved_sparsity']:8.1%}  {row['mlp_bytes_skipped_fraction']:13.1%} "
            f" {row['token_agreement_with_dense']:9.0%}  {row['ttft_s']:6.2f}"
        )
    return "\n".join(lines)
