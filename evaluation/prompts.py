"""What the model is asked, per data set. The engine wraps it in the model's chat template.

Plain Python, no Django: `task_prompt` takes a loaded `datasets.Task` and returns the user
message; every item made from the problem library gets its prompt here. `reference_answer` is
the task's reference solution written as a reply to that prompt, so the whole path (prompt,
extraction, sandbox) can be checked on answers known to be right.
"""

from __future__ import annotations

from evaluation.datasets import Task

HUMANEVAL_INSTRUCTION = (
    "Complete this Python function. Reply with the whole function in one ```python code block."
)
# Austin et al. 2021 (MBPP), section 2.1: the task text, then the three test asserts, which
# also give the function's name and signature.
MBPP_TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text}\n"
    "Your code should pass these tests:\n\n{tests}\n\n"
    "{name}Reply with one ```python code block."
)
# DS-1000 marks the gap "BEGIN SOLUTION" in its numpy, pandas, ... problems and
# "# SOLUTION START" in its matplotlib ones.
DS1000_INSTRUCTION = (
    "Complete the code where it says BEGIN SOLUTION or SOLUTION START. Reply with only the "
    "missing code in one ```python code block."
)
MBPP_DATASETS = ("mbpp", "mbpp-sanitized")


def task_prompt(task: Task) -> str:
    """The user message for a task: the data set's instruction and the task itself.

    HumanEval: the instruction, then the stub with its docstring. MBPP: as in its paper, the
    task text and its test asserts, and the function's name. DS-1000: the instruction, then its
    own prompt, which already holds the code context. Any other data set: its prompt as is."""
    if task.dataset == "humaneval":
        return f"{HUMANEVAL_INSTRUCTION}\n\n{task.prompt}"
    if task.dataset in MBPP_DATASETS:
        tests = "\n".join(task.metadata.get("test_list") or [])
        name = f"Write the function `{task.entry_point}`. " if task.entry_point else ""
        return MBPP_TEMPLATE.format(text=task.prompt.strip(), tests=tests, name=name)
    if task.dataset == "ds1000":
        return f"{DS1000_INSTRUCTION}\n\n{task.prompt}"
    return task.prompt


def reference_answer(task: Task) -> str:
    """The reference solution as a model would reply to `task_prompt`: one fenced block holding
    the whole function (HumanEval: the stub completed), the program (MBPP) or the missing code
    (DS-1000)."""
    code = f"{task.prompt}{task.reference}" if task.dataset == "humaneval" else task.reference
    return f"Here is the solution.\n\n```python\n{code.strip(chr(10))}\n```\n"
