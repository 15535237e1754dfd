"""The import_dataset command: prompts that do not fit the model's context are refused by line."""

import json

import pytest
from django.core.management import CommandError, call_command

from annotations.models import Problem

pytestmark = pytest.mark.django_db


def _jsonl(tmp_path, prompts: list[str]):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"task_id": f"t{i}", "prompt": p, "tests": "assert True"} for i, p in enumerate(prompts)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _import(path, *extra: str):
    call_command(
        "import_dataset", "jsonl", "--path", str(path), "--name", "mine", *extra, verbosity=0
    )


def test_prompts_past_the_context_are_refused_with_their_lines_and_nothing_imported(
    tiny_model_configured, tmp_path
):
    # The tiny model: context 256; its template adds 5 tokens to a prompt's words.
    words = " ".join(["w7"] * 198)  # 203 tokens: fits with 53 new tokens, not with 54
    path = _jsonl(tmp_path, ["w1 w2", words, "w3", words])
    with pytest.raises(CommandError) as refused:
        _import(path, "--max-new-tokens", "54")
    message = str(refused.value)
    assert message.startswith("nothing imported: ") and "2 problem(s) in the file" in message
    for line, task in ((2, "t1"), (4, "t3")):
        assert (
            f"line {line}: {task}: the prompt is too long for the model: 203 prompt tokens + 54 "
            "new tokens (max_new_tokens) = 257 > 256, the model's context length"
        ) in message
    assert not Problem.objects.exists()

    _import(path, "--max-new-tokens", "53")
    assert Problem.objects.count() == 4


def test_the_default_leaves_room_for_a_new_studys_reply(tiny_model_configured, tmp_path):
    # 128 new tokens (a new study's default) + 129 = 257 > 256.
    path = _jsonl(tmp_path, [" ".join(["w7"] * 124)])
    with pytest.raises(CommandError, match="line 1: t0: .* 129 prompt tokens \\+ 128 new tokens"):
        _import(path)
    with pytest.raises(CommandError, match="--max-new-tokens must be at least 1"):
        _import(path, "--max-new-tokens", "0")


def test_format_errors_are_reported_whole_before_lengths_are_checked(
    tiny_model_configured, tmp_path
):
    path = _jsonl(tmp_path, ["w1", " ".join(["w7"] * 300)])
    path.write_text(path.read_text() + '{"task_id": "t9", "prompt": "", "tests": "x"}\n')
    with pytest.raises(CommandError, match="line 3: the prompt is empty"):
        _import(path)


GOOD = '{"task_id": "ok", "prompt": "Add.", "tests": "assert True"}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"task_id": "t", "prompt": "a\\ud800b", "tests": "assert True"}',
         "a lone surrogate (\\ud800) in prompt"),
        ('{"task_id": "\\udfff", "prompt": "p", "tests": "assert True"}',
         "a lone surrogate (\\udfff) in task_id"),
        ('{"task_id": "t", "prompt": "p", "tests": "assert True", "x": {"y": ["\\ud83d"]}}',
         "a lone surrogate (\\ud83d) in x"),
        ('{"task_id": "t", "prompt": "p", "tests": "assert True", "extra": NaN}',
         "NaN is not a JSON number"),
        ('{"task_id": "t", "prompt": "p", "tests": "assert True", "extra": [-Infinity]}',
         "-Infinity is not a JSON number"),
        ('{"task_id": ["a"], "prompt": "p", "tests": "assert True"}',
         "the task id must be text or a whole number, not a list"),
        ('{"task_id": {"a": 1}, "prompt": "p", "tests": "assert True"}',
         "the task id must be text or a whole number, not an object"),
        ('{"task_id": 1.5, "prompt": "p", "tests": "assert True"}',
         "the task id must be text or a whole number, not a fraction"),
        ('{"task_id": true, "prompt": "p", "tests": "assert True"}',
         "the task id must be text or a whole number, not true/false"),
        ('{"task_id": "' + "t" * 5000 + '", "prompt": "p", "tests": "assert True"}',
         "the task id is 5000 characters long; at most 100"),
    ],
    ids=["surrogate-prompt", "surrogate-id", "surrogate-extra", "nan", "infinity", "list-id",
         "dict-id", "float-id", "bool-id", "long-id"],
)
def test_a_bad_line_is_a_one_line_error_with_its_number(tmp_path, line, reason):
    path = tmp_path / "mine.jsonl"
    path.write_text(f"{GOOD}\n{line}\n", encoding="utf-8")
    with pytest.raises(CommandError) as refused:
        _import(path)
    message = str(refused.value)
    assert message.startswith("nothing imported: ")
    assert f"line 2: {reason}" in message, message[:500]
    assert "Traceback" not in message and len(message) < 1000
    assert not Problem.objects.exists()


def test_a_file_starting_with_a_bom_is_read(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode() + b"\n")
    _import(path)
    assert list(Problem.objects.values_list("task_id", flat=True)) == ["ok"]
