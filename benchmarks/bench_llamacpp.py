"""The engine against llama.cpp on the same weights at the same precision, in one run.

    python -m benchmarks.bench_llamacpp --llama-bench BUILD/bin/llama-bench \\
        --gguf-f32 smollm2-f32.gguf [--threads 2] [--tokens 64] [--rounds 3] [--sparsity 0.5]

llama.cpp is a benchmark tool here, never a dependency. Build it from the source vendored in the
``llama-cpp-python`` sdist (``pip download --no-deps --no-binary :all: llama-cpp-python``; then
``cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON`` and
``cmake --build build -j2 --target llama-bench llama-quantize``), and turn the shipped Q4_1 GGUF
into same-precision weights with ``llama-quantize --allow-requantize SHIPPED.gguf OUT.gguf F32``:
dequantizing Q4_1 to fp32 gives exactly the weights the engine decodes with.

Each round runs, alternating: ``llama-bench -p 0 -n TOKENS -r 1`` (decode only, from an empty
context), then the engine decoding TOKENS greedy tokens of one prompt, dense and at each
threshold site (thresholds calibrated to ``--sparsity`` on two HumanEval prompts), in an order
that rotates by one each round. Dense runs on the default layout (a dense policy keeps the last
site's, and the ``input`` site's transposed projections decode dense ~4 % slower at 2
threads). Tokens/s counts decode steps only on both sides; figures are medians over rounds,
ratios are to llama.cpp and to the engine's dense in the same run. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from inference.generate import generate
from inference.loading import load_model
from inference.policies import DensePolicy, StaticPolicy
from inference.profile import calibrated_policy, humaneval_prompts, profile_model
from inference.sparsify import sparsify

PROMPT = "Write a Python function that checks whether a string is a palindrome."
SITES = ("h", "gate", "input")


def llama_bench_tokens_per_s(binary: Path, gguf: Path, threads: int, tokens: int) -> float:
    """One ``llama-bench`` decode run: tokens/s of ``tg<tokens>``."""
    out = subprocess.run(
        [str(binary), "-m", str(gguf), "-t", str(threads), "-p", "0", "-n", str(tokens),
         "-r", "1", "-o", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(out.stdout)[0]["avg_ts"])


def bench_llamacpp(
    binary: Path, gguf: Path, *, threads: int = 2, tokens: int = 64, rounds: int = 3,
    sparsity: float = 0.5,
) -> dict:  # fmt: skip
    torch.set_num_threads(threads)
    loaded = load_model()
    profile = profile_model(loaded, humaneval_prompts(2), max_new_tokens=2)
    policies = {"dense": DensePolicy()}
    policies.update({site: calibrated_policy(profile, sparsity, site) for site in SITES})
    runs: dict[str, list[dict]] = {"llama.cpp": [], **{name: [] for name in policies}}
    for policy in policies.values():  # warm-up: layouts, kernels, page faults
        generate(loaded, PROMPT, policy, max_new_tokens=4)
    names = list(policies)
    for round_ in range(rounds):
        reference = llama_bench_tokens_per_s(binary, gguf, threads, tokens)
        runs["llama.cpp"].append({"tokens_per_s": reference})
        # Each round starts one policy later, so none always runs right after llama.cpp.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            policy = policies[name]
            if name == "dense":  # on the default layout, not the last site's (dense keeps it)
                sparsify(loaded.model, StaticPolicy(0.0, site="h"), loaded.fingerprint)
            result = generate(loaded, PROMPT, policy, max_new_tokens=tokens)
            runs[name].append({
                "tokens_per_s": 1.0 / result.decode_latency_s_per_token,
                "achieved_sparsity": result.achieved_sparsity,
                "weight_bytes_read_per_token": result.weight_bytes_read_per_token,
                "new_tokens": result.new_tokens,
            })  # fmt: skip

    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    reference = median("llama.cpp", "tokens_per_s")
    dense = median("dense", "tokens_per_s")
    rows = []
    for name in policies:
        tps = median(name, "tokens_per_s")
        rows.append({
            "name": name,
            "tokens_per_s": tps,
            "of_llama_cpp": tps / reference,
            "speedup_over_dense": tps / dense,
            "achieved_sparsity": median(name, "achieved_sparsity"),
            "weight_bytes_read_per_token": median(name, "weight_bytes_read_per_token"),
            "new_tokens": min(run["new_tokens"] for run in runs[name]),
        })  # fmt: skip
    return {
        "threads": threads, "tokens": tokens, "rounds": rounds, "target_sparsity": sparsity,
        "llama_cpp_tokens_per_s": reference,
        "llama_cpp_runs": [run["tokens_per_s"] for run in runs["llama.cpp"]],
        "engine": rows,
    }  # fmt: skip


def format_result(r: dict) -> str:
    lines = [
        f"SmolLM2-135M fp32, {r['threads']} threads, {r['tokens']} tokens, medians of "
        f"{r['rounds']} alternating rounds; llama.cpp llama-bench {r['llama_cpp_tokens_per_s']:.1f}"
        f" tok/s (runs: {', '.join(f'{x:.1f}' for x in r['llama_cpp_runs'])})",
        "engine    sparsity  tok/s  of llama.cpp  vs dense  MB/token",
    ]
    for row in r["engine"]:
        lines.append(
            f"{row['name']:8s} {row['achieved_sparsity']:8.1%}  {row['tokens_per_s']:5.1f}  "
            f"{row['of_llama_cpp']:11.2f}x  {row['speedup_over_dense']:7.2f}x  "
            f"{row['weight_bytes_read_per_token'] / 1e6:8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-bench", type=Path, required=True)
    parser.add_argument("--gguf-f32", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for path in (args.llama_bench, args.gguf_f32):
        if not path.is_file():
            parser.error(f"{path} does not exist")
    result = bench_llamacpp(
        args.llama_bench, args.gguf_f32, threads=args.threads, tokens=args.tokens,
        rounds=args.rounds, sparsity=args.sparsity,
    )  # fmt: skip
    print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
