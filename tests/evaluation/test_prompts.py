from evaluation import datasets
from evaluation.code_extraction import extract_answer_code
from evaluation.prompts import reference_answer, task_prompt
from evaluation.sandbox.checks import check_candidate


def test_humaneval_prompt_keeps_the_stub_after_the_instruction():
    task = datasets.load_humaneval()[0]
    prompt = task_prompt(task)
    assert prompt.startswith("Complete this Python function")
    assert prompt.endswith(task.prompt)


def test_mbpp_prompt_follows_its_paper_task_text_then_every_test_then_the_name():
    task = next(t for t in datasets.load_mbpp() if t.task_id == "mbpp/11")
    prompt = task_prompt(task)
    assert prompt.startswith(
        "You are an expert Python programmer, and here is your task: " + task.prompt.strip()
    )
    tests = "\n".join(task.metadata["test_list"])
    assert f"Your code should pass these tests:\n\n{tests}\n" in prompt
    assert "Write the function `remove_Occ`." in prompt
    sanitized = next(t for t in datasets.load_mbpp_sanitized() if t.task_id == "mbpp/11")
    assert task_prompt(sanitized).count("assert remove_Occ") == 3


def test_custom_dataset_prompt_is_used_as_is():
    task = datasets.Task("mine", "1", "Say hi.", None, "assert True", "")
    assert task_prompt(task) == "Say hi."


def test_every_humaneval_reference_written_as_an_answer_to_its_prompt_passes():
    """The whole path a model's answer takes (fenced reply, extraction, sandbox) on answers known
    to be right; `python -m evaluation references --as-answer` runs it on all of MBPP too."""
    tasks = datasets.load_humaneval()
    failed = {
        t.task_id: r.stderr[-200:]
        for t in tasks
        if not (r := check_candidate(t, extract_answer_code(t, reference_answer(t)))).passed
    }
    assert failed == {}


def test_a_sample_of_mbpp_references_written_as_answers_pass():
    for tasks in (datasets.load_mbpp(), datasets.load_mbpp_sanitized()):
        sample = tasks[::50] + [t for t in tasks if t.task_id in ("mbpp/367", "mbpp/927")]
        results = {
            t.task_id: check_candidate(t, extract_answer_code(t, reference_answer(t))).status
            for t in sample
        }
        assert {k: v for k, v in results.items() if v != "passed"} == {}
