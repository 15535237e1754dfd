"""The benchmarks' reference solutions through the sandbox pass, and wrong ones fail."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from evaluation.datasets import load_tasks
from evaluation.sandbox.checks import check_candidate, check_humaneval, check_mbpp

HUMANEVAL = load_tasks("humaneval")


def test_all_humaneval_canonical_solutions_pass():
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: check_candidate(p, p.reference), HUMANEVAL))
    failed = {
        p.task_id: r.stderr[-200:] for p, r in zip(HUMANEVAL, results, strict=True) if not r.passed
    }
    assert len(HUMANEVAL) == 164
    assert failed == {}


def test_a_wrong_humaneval_solution_fails():
    problem = next(p for p in HUMANEVAL if p.task_id == "HumanEval/0")
    result = check_humaneval(
        problem.prompt, "    return False\n", problem.tests, "has_close_elements"
    )
    assert result.status == "failed"
    assert "AssertionError" in result.stderr


@pytest.mark.parametrize("dataset", ["mbpp", "mbpp-sanitized"])
def test_a_sample_of_mbpp_reference_solutions_pass(dataset):
    problems = load_tasks(dataset)
    # Spread over the file, and tasks 367/927 whose setup code needs the solution's classes.
    sample = problems[::40] + [p for p in problems if p.task_id in ("mbpp/367", "mbpp/927")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: check_candidate(p, p.reference, timeout_s=20), sample))
    assert {p.task_id: r.status for p, r in zip(sample, results, strict=True) if not r.passed} == {}


def test_a_wrong_mbpp_solution_fails():
    problem = load_tasks("mbpp")[10]
    wrong = f"def {problem.entry_point}(*args, **kwargs):\n    return None\n"
    assert check_mbpp(wrong, problem.tests).status == "failed"
