"""What the model is asked, per data set. The engine wraps it in the model's chat template.

Plain Python, no Django: takes a loaded `datasets.Task`, returns the user message."""

from __future__ import annotations

from evaluation.datasets import Task

HUMANEVAL_INSTRUCTION = (
    "Complete this Python function. Reply with the whole function in one ```python code block."
)
MBPP_INSTRUCTION = "Write a Python function for this task. Reply with one ```python code block."
DS1000_INSTRUCTION = (
    "Complete the code where it says BEGIN SOLUTION. Reply with only the missing code in one "
    "```python code block."
)


def item_prompt(task: Task) -> str:
    """The user message for a task: an instruction in the data set's style, then the task.

    MBPP shows the first test so the model learns the function's name and signature, as the
    MBPP paper's prompts do; HumanEval shows the stub with its docstring; DS-1000 its own
    prompt, which already holds the code context."""
    if task.dataset == "humaneval":
        return f"{HUMANEVAL_INSTRUCTION}\n\n{task.prompt}"
    if task.dataset in ("mbpp", "mbpp-sanitized"):
        tests = task.metadata.get("test_list") or []
        example = f"\n\nYour code should pass this test:\n{tests[0]}" if tests else ""
        return f"{MBPP_INSTRUCTION}\n\n{task.prompt}{example}"
    if task.dataset == "ds1000":
        return f"{DS1000_INSTRUCTION}\n\n{task.prompt}"
    return task.prompt
