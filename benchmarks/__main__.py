"""The engine's benchmarks behind one command (results and commands: docs/benchmarks.md).

    python -m benchmarks {ffn,decode,quality,e2e} [...]

- ``ffn`` (``bench_ffn``): one FFN layer, dense vs the gathered active neurons.
- ``decode`` (``bench_decode``): tokens/s of ``transformers`` against the engine per policy.
- ``quality`` (``bench_quality``): teacher-forced agreement, KL and perplexity against dense.
- ``e2e`` (``bench_e2e``): decode tokens/s and bytes per token of each threshold site against
  dense on a random model of a named shape (default ``tinyllama-1.1b``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as the engine's CLI: nothing downloads

from benchmarks import bench_decode, bench_e2e, bench_ffn, bench_quality  # noqa: E402
from inference.policies import DensePolicy, policy_argument  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    bench = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="benchmarks: one FFN layer, decoding, or quality against dense",
    )
    bench.add_argument("what", choices=["ffn", "decode", "quality", "e2e"])
    bench.add_argument(
        "--shape", default=None,
        help="ffn (default llama-70b), e2e (default tinyllama-1.1b): a name from config.SHAPES",
    )
    bench.add_argument("--sparsity", type=float, default=0.5, help="e2e: target sparsity")
    bench.add_argument("--tokens", type=int, default=32, help="e2e: new tokens per run")
    bench.add_argument("--rounds", type=int, default=3, help="e2e: alternating rounds")
    bench.add_argument("--active", default="0.5,0.3,0.1", help="ffn: active neuron fractions")
    bench.add_argument("--reps", type=int, default=None, help="repetitions (ffn 5, decode 1)")
    bench.add_argument("--threads", type=int, default=None, help="ffn, e2e (2): torch threads")
    bench.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
        help="ffn: float32 or bfloat16; quality: as load_model (auto: a GGUF as stored)",
    )  # fmt: skip
    bench.add_argument(
        "--format", default="float32", choices=["float32", "q4_0", "q4_1", "q8_0"],
        help="e2e: the random model's weights, fp32 or a GGUF block format kept as stored",
    )  # fmt: skip
    bench.add_argument(
        "--gguf-dir", type=Path, default=None,
        help="e2e: keep the random model's GGUF here (written once, reused), not in a temp dir",
    )  # fmt: skip
    bench.add_argument("--model", type=Path, default=None, help="decode: .gguf or HF dir")
    bench.add_argument("--cache-dir", type=Path, default=None)
    bench.add_argument("--max-new-tokens", type=int, default=32, help="decode: tokens per run")
    bench.add_argument("--profile", type=Path, default=None, help="decode/quality: calibrated")
    bench.add_argument("--predictor", type=Path, default=None, help="decode/quality: predictor")
    bench.add_argument(
        "--policy", type=policy_argument, action="append", help="quality: a policy (repeatable)"
    )
    bench.add_argument("--first", type=int, default=100, help="quality: first HumanEval problem")
    bench.add_argument("--count", type=int, default=8, help="quality: HumanEval problems")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return bench


def run(args: argparse.Namespace) -> int:
    if args.what == "quality":
        policies = None
        if args.policy:
            policies = {"dense": DensePolicy(), **{p.label(): p for p in args.policy}}
        result = bench_quality.bench_quality(
            args.model,
            policies,
            first=args.first,
            count=args.count,
            profile=args.profile,
            predictor=args.predictor,
            cache_dir=args.cache_dir,
            dtype=args.dtype,
        )
        text = bench_quality.format_quality(result)
    elif args.what == "e2e":
        result = bench_e2e.bench_e2e(
            args.shape or "tinyllama-1.1b", args.sparsity, tokens=args.tokens,
            rounds=args.rounds, threads=args.threads or 2, weight_format=args.format,
            gguf_dir=args.gguf_dir,
        )  # fmt: skip
        text = bench_e2e.format_e2e(result)
    elif args.what == "ffn":
        if args.dtype == "auto":
            raise ValueError("ffn draws random weights: --dtype float32 or bfloat16")
        active = [float(a) for a in args.active.split(",")]
        result = bench_ffn.bench_ffn(
            args.shape or "llama-70b", active, reps=args.reps, dtype=args.dtype,
            threads=args.threads,
        )  # fmt: skip
        text = bench_ffn.format_ffn(result)
    else:
        result = bench_decode.bench_decode(
            args.model,
            max_new_tokens=args.max_new_tokens,
            reps=args.reps,
            profile=args.profile,
            predictor=args.predictor,
            cache_dir=args.cache_dir,
        )
        text = bench_decode.format_decode(result)
    print(json.dumps(result) if args.json else text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
