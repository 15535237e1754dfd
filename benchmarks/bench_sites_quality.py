"""Quality of each threshold site at equal sparsity on the shipped model (issue 19, item 5).

    .venv/bin/python -m benchmarks.bench_sites_quality [--sparsities 0.25,0.4,0.5,0.65]
        [--pass-sparsities 0.5] [--problems 3] [--max-new-tokens 160] [--json]

1. A profile of the model on HumanEval 0-7 (8 greedy tokens each), calibrated per layer (and per
   projection input for ``input``) to each target sparsity at each site (h, gate, input).
2. ``bench quality`` (teacher-forced on HumanEval 100-107: top-1 agreement with dense, KL from
   dense, reply perplexity, achieved sparsity) for dense and every (site, sparsity).
3. Pass@1 (greedy), for dense and each site at ``--pass-sparsities``, on a fixed subset: the
   first ``--problems`` HumanEval tasks from 120 and MBPP
   tasks from 11 (none among the calibration or quality prompts), each reply scored in the
   sandbox after code extraction, as the study's pipeline does. The subset is small (2 cores
   shared), so a Pass@1 difference of one problem is ``1 / (2 * problems)``.
Results: docs/engine.md.
"""

from __future__ import annotations

import argparse
import json

from benchmarks.bench_quality import bench_quality
from evaluation.code_extraction import extract_answer_code
from evaluation.datasets import load_tasks
from evaluation.prompts import task_prompt
from evaluation.sandbox.checks import check_candidate
from inference.generate import generate
from inference.loading import load_model
from inference.policies import DensePolicy, Policy
from inference.profile import calibrated_policy, humaneval_prompts, profile_model

SITES = ("h", "gate", "input")


def pass_at_1(loaded, policy: Policy, tasks: list, max_new_tokens: int) -> dict:
    """Greedy replies to ``tasks`` under ``policy``: share passing, and the mean sparsity."""
    passed, sparsity = [], []
    for task in tasks:
        result = generate(loaded, task_prompt(task), policy, max_new_tokens=max_new_tokens)
        code = extract_answer_code(task, result.text)
        passed.append(check_candidate(task, code, timeout_s=10.0).passed)
        sparsity.append(result.achieved_sparsity)
    return {
        "pass_at_1": sum(passed) / len(passed),
        "passed": [t.task_id for t, ok in zip(tasks, passed, strict=True) if ok],
        "achieved_sparsity": sum(sparsity) / len(sparsity),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sparsities", default="0.25,0.4,0.5,0.65")
    parser.add_argument("--pass-sparsities", default="0.5", help="the sparsities Pass@1 runs at")
    parser.add_argument("--problems", type=int, default=3, help="per data set, for Pass@1")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "auto"],
        help="auto: the shipped GGUF's weights as stored (Q4_1 blocks); float32: dequantized",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sparsities = [float(s) for s in args.sparsities.split(",")]
    loaded = load_model(dtype=args.dtype)
    profile = profile_model(loaded, humaneval_prompts(8), max_new_tokens=8)
    policies: dict[str, Policy] = {"dense": DensePolicy()}
    for sparsity in sparsities:
        for site in SITES:
            policies[f"{site} {sparsity:g}"] = calibrated_policy(profile, sparsity, site)
    teacher_forced = bench_quality(policies=policies, dtype=args.dtype)["policies"]
    tasks = (
        load_tasks("humaneval")[120 : 120 + args.problems]
        + load_tasks("mbpp")[11 : 11 + args.problems]
    )
    scored = {"dense", *(f"{site} {float(s):g}" for s in args.pass_sparsities.split(",")
                         for site in SITES)}
    rows = {name: {k: v for k, v in row.items() if k != "policy"}
            for name, row in teacher_forced.items()}
    if not args.json:
        print(json.dumps({"teacher_forced": rows}), flush=True)
    for name in sorted(scored, key=list(policies).index):
        rows[name].update(pass_at_1(loaded, policies[name], tasks, args.max_new_tokens))
        if not args.json:
            print(name, json.dumps(rows[name]), flush=True)
    tasks_run = [t.task_id for t in tasks]
    result = {"model": loaded.fingerprint, "dtype": args.dtype, "tasks": tasks_run, "rows": rows}
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
