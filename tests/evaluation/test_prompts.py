from evaluation import datasets
from evaluation.prompts import item_prompt


def test_humaneval_prompt_keeps_the_stub_after_the_instruction():
    problem = datasets.load_humaneval()[0]
    prompt = item_prompt(problem)
    assert prompt.startswith("Complete this Python function")
    assert prompt.endswith(problem.prompt)


def test_mbpp_prompt_shows_the_first_test_for_the_function_name():
    problem = next(p for p in datasets.load_mbpp() if p.task_id == "mbpp/11")
    prompt = item_prompt(problem)
    assert problem.prompt in prompt
    assert problem.metadata["test_list"][0] in prompt
    assert problem.metadata["test_list"][1] not in prompt, "only one test is shown"


def test_custom_dataset_prompt_is_used_as_is():
    problem = datasets.Task("mine", "1", "Say hi.", None, "assert True", "")
    assert item_prompt(problem) == "Say hi."
