"""What re-laying a GGUF's blocks costs in accuracy: KL of the dense model on each site's layout
from the dense model on the file's own layout (issue 26).

    .venv/bin/python -m benchmarks.bench_layout_kl --gguf FILE.gguf [--prompts 8] [--json]

The ``h`` and ``gate`` sites skip down's rows and the ``input`` site every projection's rows,
which needs their blocks along the output dimension: ``W.t()`` requantized in the file's format
from the file's blocks (``QuantLinear.set_layout``). Each site's layout runs dense (threshold 0)
teacher-forced on HumanEval prompts 100 onwards; the figures are the mean over positions of
``KL(p_file || p_site)`` of the next-token distributions (nats), top-1 agreement with the file's
layout, and the largest KL at any position. Results: docs/engine.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from inference.loading import load_model
from inference.policies import DensePolicy, StaticPolicy
from inference.profile import humaneval_prompts
from inference.quantized import is_quantized
from inference.sparsify import sparsify

SITES = ("h", "gate", "input")


def prompt_log_probs(loaded, prompts: list[str]) -> list[torch.Tensor]:
    """Next-token log-probabilities at every position of each prompt (``[S, V]`` each)."""
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
            out.append(F.log_softmax(loaded.model(ids).logits[0].float(), dim=-1))
    return out


def bench_layout_kl(gguf: Path, prompts: int = 8) -> dict:
    loaded = load_model(gguf, dtype="auto")
    if not is_quantized(loaded.model):
        raise SystemExit(f"{gguf} holds no block format: nothing is re-laid out")
    texts = humaneval_prompts(100 + prompts)[100:]
    sparsify(loaded.model, DensePolicy())
    reference = prompt_log_probs(loaded, texts)
    rows = []
    for site in SITES:
        sparsify(loaded.model, StaticPolicy(0.0, site=site))  # the site's layout, dense
        relaid = prompt_log_probs(loaded, texts)
        kl = torch.cat([
            (ref.exp() * (ref - new)).sum(-1) for ref, new in zip(reference, relaid, strict=True)
        ])  # fmt: skip
        top1 = torch.cat([
            (ref.argmax(-1) == new.argmax(-1)).float()
            for ref, new in zip(reference, relaid, strict=True)
        ])  # fmt: skip
        rows.append({
            "site": site, "mean_kl_nats": kl.mean().item(), "max_kl_nats": kl.max().item(),
            "top1_agreement": top1.mean().item(), "positions": kl.numel(),
        })  # fmt: skip
    return {"gguf": str(gguf), "prompts": prompts, "layouts": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.gguf.is_file():
        parser.error(f"{args.gguf} does not exist")
    result = bench_layout_kl(args.gguf, args.prompts)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.gguf.name}: dense on each site's layout against the file's")
        for row in result["layouts"]:
            print(
                f"  {row['site']:6s} mean KL {row['mean_kl_nats']:.5f} nats, max "
                f"{row['max_kl_nats']:.4f}, top-1 {row['top1_agreement']:.1%} "
                f"({row['positions']} positions)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
