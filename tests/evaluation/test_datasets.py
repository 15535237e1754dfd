"""Loaders: shapes and counts of the real files, and the all-or-nothing rule on bad files."""

import hashlib
import json
from pathlib import Path

import pytest

from evaluation.datasets import (
    MBPP_PATH,
    MBPP_SANITIZED_PATH,
    DatasetError,
    JsonlSchema,
    count_unavailable,
    load_ds1000,
    load_tasks,
)
from evaluation.sandbox.checks import check_candidate

FIXTURES = Path(__file__).parent / "fixtures"
DS1000_SAMPLE = FIXTURES / "ds1000_sample.jsonl"


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_humaneval_from_the_installed_package():
    problems = load_tasks("humaneval")
    assert len(problems) == 164
    first = problems[0]
    assert (first.dataset, first.task_id, first.entry_point) == (
        "humaneval",
        "HumanEval/0",
        "has_close_elements",
    )
    assert first.tests.rstrip().endswith("check(has_close_elements)")
    assert first.prompt.startswith("from typing import List")


def test_mbpp_full_from_the_repository_copy():
    problems = load_tasks("mbpp")
    assert len(problems) == 974
    assert [p.metadata["split"] for p in problems].count("test") == 500
    first = problems[0]
    assert (first.task_id, first.entry_point) == ("mbpp/1", "min_cost")
    assert first.tests.count("assert ") == 3
    assert sum(bool(p.metadata["challenge_test_list"]) for p in problems) == 11


def test_mbpp_setup_code_runs_after_the_candidate():
    problem = next(p for p in load_tasks("mbpp") if p.task_id == "mbpp/367")
    setup = problem.tests.split("assert")[0]
    assert "Node(" in setup  # builds objects from the solution's class


def test_mbpp_sanitized():
    problems = load_tasks("mbpp-sanitized")
    assert len(problems) == 427
    assert sum(p.metadata["split"] == "test" for p in problems) == 257
    assert all(p.entry_point for p in problems)
    with_imports = next(p for p in problems if p.task_id == "mbpp/82")
    assert with_imports.tests.startswith("import math")


@pytest.mark.parametrize(
    ("path", "sha256_prefix"), [(MBPP_PATH, "ccf64cea"), (MBPP_SANITIZED_PATH, "ca95deaa")]
)
def test_repository_copies_are_byte_identical_to_the_recorded_files(path, sha256_prefix):
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(sha256_prefix)
    assert "CC BY 4.0" in (path.parent / "README.md").read_text()


def test_ds1000_sample_loads_and_marks_the_missing_library_unavailable():
    problems = load_ds1000(DS1000_SAMPLE)
    assert [p.metadata["library"] for p in problems] == ["Numpy", "Pandas", "Tensorflow"]
    assert problems[0].task_id == "ds1000/9001"
    assert count_unavailable(problems) == {"library 'tensorflow' is not installed": 1}
    assert [p.unavailable_reason is None for p in problems] == [True, True, False]


def test_ds1000_reference_solutions_pass_and_wrong_ones_fail():
    numpy_problem, pandas_problem, tensorflow_problem = load_ds1000(DS1000_SAMPLE)
    # test_execution runs the reference; the pandas one writes totals.csv in the sandbox's cwd.
    assert check_candidate(numpy_problem, numpy_problem.reference).status == "passed"
    assert check_candidate(pandas_problem, pandas_problem.reference).status == "passed"
    assert check_candidate(numpy_problem, "result = a.min(axis=1)").status == "failed"
    # test_string forbids loops, even when the result is right.
    looped = "import numpy as np\nresult = np.array([max(row) for row in a])"
    assert check_candidate(numpy_problem, looped).status == "failed"
    unavailable = check_candidate(tensorflow_problem, tensorflow_problem.reference)
    assert (unavailable.status, unavailable.stderr) == (
        "error",
        "unavailable: library 'tensorflow' is not installed",
    )


def test_bad_file_is_rejected_whole_with_every_line_and_reason(tmp_path):
    good = DS1000_SAMPLE.read_text().splitlines()
    no_context = json.loads(good[0])
    del no_context["code_context"]
    no_library = json.loads(good[1])
    del no_library["metadata"]["library"]
    path = _write_jsonl(
        tmp_path / "ds.jsonl",
        [
            good[0],
            "{not json",
            json.dumps(no_context),
            "",
            json.dumps(no_library),
            "[1, 2]",
            good[0],
        ],
    )
    with pytest.raises(DatasetError) as raised:
        load_tasks("ds1000", path)
    assert raised.value.errors == [
        (2, "malformed JSON (Expecting property name enclosed in double quotes at column 2)"),
        (3, "missing field(s): code_context"),
        (5, "missing metadata field(s): library"),
        (6, "expected a JSON object, got list"),
        (7, "duplicate task id 9001 (first on line 1)"),
    ]
    assert "line 3: missing field(s): code_context" in str(raised.value)


def test_wrong_field_types_are_rejected(tmp_path):
    row = json.loads(DS1000_SAMPLE.read_text().splitlines()[0])
    row["code_context"] = ["not", "a", "string"]
    with pytest.raises(DatasetError, match="line 1: field\\(s\\) must be strings: code_context"):
        load_ds1000(_write_jsonl(tmp_path / "ds.jsonl", [json.dumps(row)]))


def test_ds1000_without_test_execution_is_rejected(tmp_path):
    row = json.loads(DS1000_SAMPLE.read_text().splitlines()[0])
    row["code_context"] = "def check(x):\n    pass\n"
    with pytest.raises(DatasetError, match="line 1: code_context does not define test_execution"):
        load_ds1000(_write_jsonl(tmp_path / "ds.jsonl", [json.dumps(row)]))


def test_missing_file_and_empty_file_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="cannot read the file"):
        load_ds1000(tmp_path / "absent.jsonl")
    with pytest.raises(DatasetError, match="holds no problems"):
        load_ds1000(_write_jsonl(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DatasetError, match="needs the path"):
        load_tasks("ds1000")
    with pytest.raises(DatasetError, match="unknown data set"):
        load_tasks("apps")


def test_mbpp_tests_must_be_a_list(tmp_path):
    row = {"task_id": 1, "text": "t", "code": "def f(): pass", "test_list": "assert f() is None"}
    with pytest.raises(
        DatasetError, match="line 1: field\\(s\\) must be lists of strings: test_list"
    ):
        load_tasks("mbpp", _write_jsonl(tmp_path / "m.jsonl", [json.dumps(row)]))


def test_custom_jsonl_with_a_declared_schema(tmp_path):
    schema = JsonlSchema(
        name="mini", task_id="id", prompt="question", tests="checks", entry_point="fn",
        reference="answer",
    )  # fmt: skip
    rows = [
        {"id": 1, "question": "Add.", "checks": ["assert add(1, 2) == 3"], "fn": "add",
         "answer": "def add(a, b):\n    return a + b\n", "difficulty": "easy"},
        {"id": 2, "question": "Neg.", "checks": "assert neg(1) == -1\n", "fn": "neg",
         "answer": "def neg(a):\n    return -a\n"},
    ]  # fmt: skip
    path = _write_jsonl(tmp_path / "mini.jsonl", [json.dumps(r) for r in rows])
    problems = load_tasks("jsonl", path, schema=schema)
    assert [(p.dataset, p.task_id, p.entry_point) for p in problems] == [
        ("mini", "1", "add"),
        ("mini", "2", "neg"),
    ]
    assert problems[0].metadata == {"difficulty": "easy"}
    assert all(check_candidate(p, p.reference).passed for p in problems)
    assert not check_candidate(problems[0], "def add(a, b):\n    return a - b\n").passed


def test_custom_jsonl_missing_a_declared_field(tmp_path):
    schema = JsonlSchema(name="mini", task_id="id", prompt="question", tests="checks")
    path = _write_jsonl(tmp_path / "mini.jsonl", [json.dumps({"id": 1, "question": "q"})])
    with pytest.raises(DatasetError, match="line 1: missing field\\(s\\): checks"):
        load_tasks("jsonl", path, schema=schema)


def test_custom_jsonl_duplicate_ids_and_bad_tests_are_listed_together(tmp_path):
    schema = JsonlSchema(name="mini", task_id="id", prompt="question", tests="checks")
    rows = [
        {"id": 1, "question": "q", "checks": "assert True"},
        {"id": 1, "question": "q", "checks": "assert True"},
        {"id": 2, "question": "q", "checks": [1, 2]},
    ]
    path = _write_jsonl(tmp_path / "mini.jsonl", [json.dumps(r) for r in rows])
    with pytest.raises(DatasetError) as raised:
        load_tasks("jsonl", path, schema=schema)
    assert raised.value.errors == [
        (2, "duplicate task id 1 (first on line 1)"),
        (3, "the tests field must be a string or a list of strings"),
    ]


def test_custom_jsonl_reports_every_error_an_invalid_utf8_line_among_them(tmp_path):
    schema = JsonlSchema(name="mini", task_id="id", prompt="question", tests="checks")
    path = tmp_path / "mini.jsonl"
    path.write_bytes(
        b'{"id": 1, "question": "caf\xe9?", "checks": "assert True"}\n'  # Latin-1, not UTF-8
        b'{"id": 2, "question": "   ", "checks": "assert True"}\n'
        b'{"id": 3, "question": "fine", "checks": "assert True"}\n'
        b'{"id": 4, "question": "broken"\n'
        b'{"id": 5, "question": "", "checks": "assert True"}\n'
    )
    with pytest.raises(DatasetError) as raised:
        load_tasks("jsonl", path, schema=schema)
    assert raised.value.errors == [
        (1, "not UTF-8 text (byte 27 of the line)"),
        (2, "the prompt is empty"),
        (4, "malformed JSON (Expecting ',' delimiter at column 1)"),
        (5, "the prompt is empty"),
    ]
    assert "4 problem(s)" in str(raised.value)
