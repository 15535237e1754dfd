"""The engine against llama.cpp on the same GGUF file, in one run.

    python -m benchmarks.bench_llamacpp --llama-bench BUILD/bin/llama-bench \\
        --gguf FILE.gguf [--threads 1 2] [--tokens 64] [--rounds 3] [--sparsity 0.5] [--cpu-time]

llama.cpp is a benchmark tool here, never a dependency. Build it from the source vendored in the
``llama-cpp-python`` sdist (``pip download --no-deps --no-binary :all: llama-cpp-python``; then
``cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=ON`` and
``cmake --build build -j2 --target llama-bench llama-quantize``). ``--gguf`` is any LLaMA GGUF:
the shipped Q4_1 file, or a requantization of it (``llama-quantize --allow-requantize --pure
SHIPPED.gguf OUT.gguf Q8_0``; ``F32`` for the fp32 reference). The engine loads it with
``dtype="auto"``: block formats stay as stored, float formats load as fp32, so both read the
same file.

Each round runs, alternating, at each thread count: ``llama-bench -p 0 -n TOKENS -r 1`` (decode
only, from an empty context), then the engine decoding TOKENS greedy tokens of one prompt,
dense and at each threshold site (thresholds calibrated to ``--sparsity`` on two HumanEval
prompts), in an order that rotates by one each round. Dense runs on the file's layout (GGUF
blocks: a dense policy returns to it; fp32: the default layout, as a dense policy keeps the
last site's). Tokens/s counts decode steps only on both sides; figures are medians over
rounds, ratios are to llama.cpp and to the engine's dense in the same run; "of byte ratio" is a
site's speed-up over dense divided by dense's weight bytes per token over the site's (1: the
bytes it skips are all time saved). ``--cpu-time`` adds, at 1 thread, each side's CPU time per
decoded token (a run of 2N tokens less one of N, so loading and warm-up cancel): on a shared
machine the wall clock also counts the time other processes hold the cores. Results:
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from inference.generate import generate
from inference.loading import load_model
from inference.policies import DensePolicy, StaticPolicy
from inference.profile import calibrated_policy, humaneval_prompts, profile_model
from inference.quantized import is_quantized
from inference.sparsify import sparsify

PROMPT = "Write a Python function that checks whether a string is a palindrome."
SITES = ("h", "gate", "input")


def llama_bench(binary: Path, gguf: Path, threads: int, tokens: int) -> dict:
    """One ``llama-bench`` decode run: its JSON record (``avg_ts``: tokens/s of ``tg<tokens>``,
    ``build_commit``, ``build_number``)."""
    out = subprocess.run(
        [str(binary), "-m", str(gguf), "-t", str(threads), "-p", "0", "-n", str(tokens),
         "-r", "1", "-o", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)[0]


def llama_bench_cpu_s_per_token(binary: Path, gguf: Path, tokens: int) -> float:
    """``llama-bench``'s CPU time per decoded token at 1 thread: a run of ``2 * tokens`` less one
    of ``tokens`` (its load and warm-up cancel), over ``tokens``. On a shared machine the wall
    clock counts the time other processes hold the cores; the CPU time does not."""
    used = []
    for n in (tokens, 2 * tokens):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        llama_bench(binary, gguf, 1, n)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return (used[1] - used[0]) / tokens


def engine_cpu_s_per_token(loaded, policy, tokens: int) -> float:
    """The engine's CPU time per decoded token (1 thread), as ``llama_bench_cpu_s_per_token``."""
    used, counts = [], []
    for n in (tokens, 2 * tokens):
        start = time.process_time()
        result = generate(loaded, PROMPT, policy, max_new_tokens=n)
        used.append(time.process_time() - start)
        counts.append(result.new_tokens)
    return (used[1] - used[0]) / (counts[1] - counts[0])


def bench_llamacpp(
    binary: Path, gguf: Path, *, threads: tuple[int, ...] = (2,), tokens: int = 64,
    rounds: int = 3, sparsity: float = 0.5, cpu_time: bool = False,
) -> dict:  # fmt: skip
    loaded = load_model(gguf, dtype="auto")
    quantized = is_quantized(loaded.model)
    profile = profile_model(loaded, humaneval_prompts(2), max_new_tokens=2)
    policies = {"dense": DensePolicy()}
    policies.update({site: calibrated_policy(profile, sparsity, site) for site in SITES})
    runs = {(t, name): [] for t in threads for name in ("llama.cpp", *policies)}
    for policy in policies.values():  # warm-up: layouts, kernels, page faults
        generate(loaded, PROMPT, policy, max_new_tokens=4)
    names = list(policies)
    build = {}
    load_before = os.getloadavg()[0]  # the machine is shared: a figure carries its load
    for round_ in range(rounds):
        for t in threads:
            torch.set_num_threads(t)
            record = llama_bench(binary, gguf, t, tokens)
            build = {k: record.get(k) for k in ("build_commit", "build_number", "cpu_info")}
            runs[t, "llama.cpp"].append({"tokens_per_s": float(record["avg_ts"])})
            if cpu_time and t == 1:
                cpu = llama_bench_cpu_s_per_token(binary, gguf, tokens)
                runs[t, "llama.cpp"][-1]["cpu_tokens_per_s"] = 1.0 / cpu
            # Each round starts one policy later, so none always runs right after llama.cpp.
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                policy = policies[name]
                if name == "dense" and not quantized:  # fp32: the default layout
                    sparsify(loaded.model, StaticPolicy(0.0, site="h"), loaded.fingerprint)
                result = generate(loaded, PROMPT, policy, max_new_tokens=tokens)
                runs[t, name].append({
                    "tokens_per_s": 1.0 / result.decode_latency_s_per_token,
                    "achieved_sparsity": result.achieved_sparsity,
                    "weight_bytes_read_per_token": result.weight_bytes_read_per_token,
                    "new_tokens": result.new_tokens,
                })  # fmt: skip
                if cpu_time and t == 1:
                    cpu = engine_cpu_s_per_token(loaded, policy, tokens)
                    runs[t, name][-1]["cpu_tokens_per_s"] = 1.0 / cpu

    def median(t: int, name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[t, name])

    per_threads = []
    for t in threads:
        reference = median(t, "llama.cpp", "tokens_per_s")
        dense = median(t, "dense", "tokens_per_s")
        dense_bytes = median(t, "dense", "weight_bytes_read_per_token")
        rows = []
        for name in policies:
            tps = median(t, name, "tokens_per_s")
            read = median(t, name, "weight_bytes_read_per_token")
            rows.append({
                "name": name,
                "tokens_per_s": tps,
                "of_llama_cpp": tps / reference,
                "speedup_over_dense": tps / dense,
                "of_byte_ratio": (tps / dense) / (dense_bytes / read),
                "achieved_sparsity": median(t, name, "achieved_sparsity"),
                "weight_bytes_read_per_token": read,
                "new_tokens": min(run["new_tokens"] for run in runs[t, name]),
            })  # fmt: skip
            if cpu_time and t == 1:
                cpu = median(t, name, "cpu_tokens_per_s")
                rows[-1]["cpu_tokens_per_s"] = cpu
                rows[-1]["cpu_of_llama_cpp"] = cpu / median(t, "llama.cpp", "cpu_tokens_per_s")
                rows[-1]["cpu_speedup_over_dense"] = cpu / median(t, "dense", "cpu_tokens_per_s")
        per_threads.append({
            "threads": t,
            "llama_cpp_tokens_per_s": reference,
            "llama_cpp_runs": [run["tokens_per_s"] for run in runs[t, "llama.cpp"]],
            "llama_cpp_cpu_tokens_per_s": (
                median(t, "llama.cpp", "cpu_tokens_per_s") if cpu_time and t == 1 else None
            ),
            "engine": rows,
        })  # fmt: skip
    return {
        "gguf": str(gguf), "stored_as": "blocks" if quantized else "fp32", "tokens": tokens,
        "rounds": rounds, "target_sparsity": sparsity, "llama_cpp": build,
        "load_average": [load_before, os.getloadavg()[0]], "results": per_threads,
    }  # fmt: skip


def format_result(r: dict) -> str:
    lines = [
        f"{Path(r['gguf']).name} (engine: {r['stored_as']}), {r['tokens']} tokens, medians of "
        f"{r['rounds']} alternating rounds; llama.cpp build {r['llama_cpp'].get('build_number')}"
        f" ({r['llama_cpp'].get('build_commit')}); load average "
        f"{r['load_average'][0]:.1f} before, {r['load_average'][1]:.1f} after",
    ]
    for block in r["results"]:
        lines += [
            f"{block['threads']} threads: llama-bench {block['llama_cpp_tokens_per_s']:.1f} tok/s"
            f" (runs: {', '.join(f'{x:.1f}' for x in block['llama_cpp_runs'])})",
            "engine    sparsity  tok/s  of llama.cpp  vs dense  of byte ratio  MB/token",
        ]
        for row in block["engine"]:
            lines.append(
                f"{row['name']:8s} {row['achieved_sparsity']:8.1%}  {row['tokens_per_s']:5.1f}  "
                f"{row['of_llama_cpp']:11.2f}x  {row['speedup_over_dense']:7.2f}x  "
                f"{row['of_byte_ratio']:13.2f}  {row['weight_bytes_read_per_token'] / 1e6:8.1f}"
                + (
                    f"  CPU time: {row['cpu_tokens_per_s']:5.1f} tok/s, "
                    f"{row['cpu_of_llama_cpp']:.2f}x llama.cpp, "
                    f"{row['cpu_speedup_over_dense']:.2f}x dense"
                    if "cpu_tokens_per_s" in row else ""
                )
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-bench", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, required=True, help="any LLaMA GGUF file")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="at 1 thread, also CPU time per decoded token on both sides (a loaded machine)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for path in (args.llama_bench, args.gguf):
        if not path.is_file():
            parser.error(f"{path} does not exist")
    result = bench_llamacpp(
        args.llama_bench, args.gguf, threads=tuple(args.threads), tokens=args.tokens,
        rounds=args.rounds, sparsity=args.sparsity, cpu_time=args.cpu_time,
    )  # fmt: skip
    print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
