"""How far a policy moves the model from dense on dense's own answer: the dense output of an
item is teacher-forced through the model with and without the policy, and the two next-token
distributions are compared at every answer position (Dutta et al., NeurIPS 2024: answers flip
even at unchanged accuracy, and flips track this KL). Two forward passes of the answer, cheap
next to decoding it."""

from __future__ import annotations

import torch

from inference.generate import prompt_ids
from inference.loading import LoadedModel
from inference.policies import DensePolicy, Policy
from inference.sparse_mlp import set_thresholds, sparse_mlps
from inference.sparsify import sparsify


@torch.inference_mode()
def divergence_from_dense(
    loaded: LoadedModel, prompt: str | list[dict], dense_token_ids: list[int], policy: Policy
) -> dict:
    """Teacher-force `dense_token_ids` (dense's answer to `prompt`) under dense and under
    `policy` (its base thresholds: an adaptive policy's per-step factor is left out).

    Out: ``kl_from_dense`` (mean over answer positions of KL(dense ‖ policy) of the
    next-token distributions, nats), ``top1_agreement_with_dense`` (share of positions where
    both put the same token first) and ``divergence_tokens`` (positions compared). The model
    is left sparsified for `policy`, as `generate` leaves it."""
    prompt_part = prompt_ids(loaded.tokenizer, prompt)  # [1, S]
    answer = torch.tensor([dense_token_ids], dtype=prompt_part.dtype)  # [1, T]
    device = next(loaded.model.parameters()).device
    input_ids = torch.cat([prompt_part, answer], dim=1).to(device)  # [1, S + T]
    # The logits at positions S − 1 … S + T − 2 predict the answer's T tokens.
    start, end = prompt_part.shape[1] - 1, input_ids.shape[1] - 1
    log_probs = []
    for each in (DensePolicy(), policy):
        model = sparsify(loaded.model, each, loaded.fingerprint)
        set_thresholds(model, each.layer_thresholds(len(sparse_mlps(model))))
        logits = model(input_ids).logits[0, start:end].float()  # [T, V]
        log_probs.append(torch.log_softmax(logits, dim=-1))
    dense, sparse = log_probs
    kl = (dense.exp() * (dense - sparse)).sum(dim=-1)  # [T]
    agree = dense.argmax(dim=-1) == sparse.argmax(dim=-1)
    return {
        "kl_from_dense": float(kl.clamp_min(0).mean()),
        "top1_agreement_with_dense": float(agree.float().mean()),
        "divergence_tokens": int(kl.numel()),
    }
