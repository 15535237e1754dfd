"""extract_code on the kinds of completions models really produce, scored through the sandbox.

Each case is a completion in a style seen from chat models (fenced blocks with prose), base models
(continuing the body, then wandering off into new functions) and small models like SmolLM2 (code,
then explanations, example calls and repeated text until the token limit).
"""

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

from evaluation.code_extraction import extract_answer_code, extract_code
from evaluation.datasets import load_tasks
from evaluation.sandbox.checks import check_candidate
from evaluation.sandbox.outcomes import outcome_kind

PROBLEMS = {p.task_id: p for p in load_tasks("humaneval")}
PREFIX = PROBLEMS["HumanEval/29"]  # filter_by_prefix(strings, prefix)
MBPP = {p.task_id: p for p in load_tasks("mbpp")}

PREFIX_FUNCTION = '''from typing import List


def filter_by_prefix(strings: List[str], prefix: str) -> List[str]:
    """ Filter an input list of strings only for ones that start with a given prefix."""
    return [s for s in strings if s.startswith(prefix)]'''

CASES = {
    "chat: prose, one fenced block, prose": (
        "Sure! Here's the implementation of `filter_by_prefix`:\n\n```python\n"
        + PREFIX_FUNCTION
        + "\n```\n\nThis uses a list comprehension with `str.startswith` to keep only matching "
        "strings. Let me know if you have any questions!"
    ),
    "chat: usage example block first, solution block second": (
        "You can call it like this:\n\n```python\nfilter_by_prefix(['abc', 'bcd'], 'a')\n```\n\n"
        "And here is the function:\n\n```python\n" + PREFIX_FUNCTION + "\n```\n"
    ),
    "chat: fenced function followed by example prints and a __main__ block": (
        "```python\n" + PREFIX_FUNCTION + "\n\n\nprint(filter_by_prefix(['abc', 'xyz'], 'a'))\n"
        "result = filter_by_prefix(input().split(), 'a')\n\n"
        "if __name__ == '__main__':\n    import doctest\n    doctest.testmod()\n"
        "    raise SystemExit(input())\n```"
    ),
    "base model: continues the body, then starts another function": (
        "    return [x for x in strings if x.startswith(prefix)]\n\n\n"
        "def filter_by_suffix(strings: List[str], suffix: str) -> List[str]:\n"
        "    return [x for x in strings if x.endswith(suffix)]\n\n\n"
        "if __name__ == '__main__':\n    print(filter_by_prefix(['a'], 'a'))\n"
    ),
    "base model: body, then prose at column 0": (
        "    return [s for s in strings if s[: len(prefix)] == prefix]\n\n"
        "The function iterates over the strings and compares the first characters.\n"
        "Time complexity: O(n * k).\n"
    ),
    "body continuation starting with a blank line and a comment": (
        "\n    # keep only the strings that begin with the prefix\n"
        "    out = []\n    for s in strings:\n        if s.startswith(prefix):\n"
        "            out.append(s)\n    return out\n"
    ),
    "unfenced whole function with prose before and after": (
        "Here is the completed function:\n\n" + PREFIX_FUNCTION + "\n\nExplanation:\n"
        "1. We loop over each string.\n2. We check `startswith`.\n"
    ),
    "SmolLM2-style ramble: code, explanation, example block, repetition until cut off": (
        "```python\n" + PREFIX_FUNCTION + "\n```\n\nExplanation:\n\nThe function "
        "`filter_by_prefix` takes a list of strings and a prefix. It returns a new list.\n\n"
        "Example usage:\n\n```python\nprint(filter_by_prefix(['abc', 'bcd', 'cde'], 'a'))\n"
        "# Output: ['abc']\n```\n\nThe function `filter_by_prefix` takes a list of strings and a "
        "prefix. The function `filter_by_prefix` takes a list of strings and a prefix. The fun"
    ),
    "unfenced, prose that looks like code before the function": (
        "return the strings that start with the prefix, like this:\n\n"
        + PREFIX_FUNCTION
        + "\n\nfor example, ['abc', 'b'] with 'a' gives ['abc'].\n"
    ),
    "fence never closed (hit the token limit inside the code)": (
        "```python\n" + PREFIX_FUNCTION + "\n\n\ndef test():\n    assert filter_by_prefix([], 'a'"
    ),
    "chat end token, then junk": (
        "```python\n" + PREFIX_FUNCTION + "\n```<|im_end|>\n<|im_start|>user\nthanks```python\nx ="
    ),
    "fenced body only, indented": (
        "Add this inside the function:\n```python\n"
        "    return list(filter(lambda s: s.startswith(prefix), strings))\n```"
    ),
    "block tagged py, indented as a whole, with a bash block before it": (
        "Install nothing:\n```bash\npip list\n```\n```py\n"
        + "\n".join("    " + line for line in PREFIX_FUNCTION.splitlines())
        + "\n```"
    ),
    "Windows line endings and tabs": (
        "```python\r\ndef filter_by_prefix(strings, prefix):\r\n\treturn [s for s in strings"
        " if s.startswith(prefix)]\r\n```\r\n"
    ),
}


@pytest.mark.parametrize("completion", CASES.values(), ids=CASES.keys())
def test_messy_humaneval_completions_pass_after_extraction(completion):
    code = extract_code(completion, prompt=PREFIX.prompt, entry_point=PREFIX.entry_point)
    result = check_candidate(PREFIX, code)
    assert result.status == "passed", f"{code!r}\n{result.stderr[-500:]}"


def test_example_calls_and_main_block_are_dropped_but_definitions_kept():
    completion = CASES["chat: fenced function followed by example prints and a __main__ block"]
    code = extract_code(completion, entry_point="filter_by_prefix")
    assert "def filter_by_prefix" in code and "from typing import List" in code
    assert "print(" not in code and "__main__" not in code and "input()" not in code


def test_continuation_keeps_helper_functions_defined_after_the_body():
    code = extract_code(
        CASES["base model: continues the body, then starts another function"],
        prompt=PREFIX.prompt,
        entry_point=PREFIX.entry_point,
    )
    assert code.startswith("    return [x for x in strings")
    assert "def filter_by_suffix" in code and "__main__" not in code


def test_chooses_the_block_defining_the_entry_point():
    completion = CASES["chat: usage example block first, solution block second"]
    assert "def filter_by_prefix" in extract_code(completion, entry_point="filter_by_prefix")


def test_without_entry_point_takes_the_longest_python_block():
    completion = "```text\nlong long long long long output text\n```\n```python\nx = 1\n```\n" \
                 "```python\nimport numpy as np\nresult = np.arange(3)\n```"  # fmt: skip
    assert extract_code(completion) == "import numpy as np\nresult = np.arange(3)\n"


def test_ds1000_style_completion_stops_at_its_markers():
    completion = "<code>\nresult = a.max(axis=1)\n</code>\nEND SOLUTION\nMore text here."
    assert extract_code(completion) == "result = a.max(axis=1)\n"


def test_mbpp_completion_without_prompt_is_a_standalone_program():
    problem = MBPP["mbpp/11"]  # remove_Occ
    completion = (
        "Here is a Python function that removes the first and last occurrence of a character:\n\n"
        "def remove_Occ(s, ch):\n    first = s.find(ch)\n    if first != -1:\n"
        "        s = s[:first] + s[first + 1:]\n    last = s.rfind(ch)\n    if last != -1:\n"
        "        s = s[:last] + s[last + 1:]\n    return s\n\n"
        "print(remove_Occ('hello', 'l'))  # heo\n\nI hope this helps!"
    )
    code = extract_code(completion, entry_point=problem.entry_point)
    assert code.startswith("def remove_Occ(s, ch):")
    assert "print(" not in code and "hope" not in code
    assert check_candidate(problem, code).status == "passed"


def test_prose_only_completion_is_returned_and_fails_in_the_sandbox():
    completion = "I'm sorry, I can't help with that."
    code = extract_code(completion, prompt=PREFIX.prompt, entry_point=PREFIX.entry_point)
    assert check_candidate(PREFIX, code).status == "failed"


def test_wrong_but_well_formed_code_still_fails():
    completion = "```python\ndef filter_by_prefix(strings, prefix):\n    return strings\n```"
    code = extract_code(completion, prompt=PREFIX.prompt, entry_point=PREFIX.entry_point)
    assert check_candidate(PREFIX, code).status == "failed"


SMOLLM2 = [
    json.loads(line)
    for line in (Path(__file__).parent / "fixtures" / "smollm2_completions.jsonl").open()
]


@pytest.mark.parametrize(
    "row", SMOLLM2, ids=[f"{r['task_id']}-{r['policy']['kind']}" for r in SMOLLM2]
)
def test_real_smollm2_completions_extract_to_the_models_function(row):
    problem = PROBLEMS.get(row["task_id"]) or MBPP[row["task_id"]]
    prompt = problem.prompt if problem.dataset == "humaneval" else None
    code = extract_code(row["completion"], prompt=prompt, entry_point=problem.entry_point)
    assert ast.parse((prompt or "") + code)
    assert "print(" not in code and "```" not in code and "This function" not in code
    assert check_candidate(problem, code).status == row["expected_status"]


REMOVE_OCC = (
    "def remove_Occ(s, ch):\n    s = s.replace(ch, '', 1)\n"
    "    i = s.rfind(ch)\n    return s if i < 0 else s[:i] + s[i + 1:]\n"
)
# The shapes of issue 17: each answer defines the entry point somewhere; extraction keeps it.
FAILURE_SHAPES = {
    "definition outside the fence, only the usage fenced": (
        "Here is the function:\n\n" + REMOVE_OCC + "\nExample usage:\n```python\n"
        "print(remove_Occ('hello', 'l'))\n```\n"
    ),
    "definition followed by usage, one block": (
        "```python\n" + REMOVE_OCC + "\nresult = remove_Occ('hello', 'l')\nprint(result)\n```"
    ),
    "several fenced blocks, the definition in the middle": (
        "First import nothing:\n```python\n# no imports needed\n```\nThen:\n```python\n"
        + REMOVE_OCC
        + "```\nAnd try it:\n```python\nassert remove_Occ('PHP', 'P') == 'H'\n```"
    ),
    "definition indented inside a list item, outside any fence": (
        "1. Define it:\n\n"
        + "".join("    " + line + "\n" for line in REMOVE_OCC.splitlines())
        + "\n2. Call it:\n```python\nremove_Occ('abcda', 'a')\n```"
    ),
}


@pytest.mark.parametrize("answer", FAILURE_SHAPES.values(), ids=FAILURE_SHAPES.keys())
def test_the_entry_points_def_is_never_dropped(answer):
    task = MBPP["mbpp/11"]
    code = extract_answer_code(task, answer)
    assert code.startswith("def remove_Occ(s, ch):"), code
    assert "print(" not in code
    assert check_candidate(task, code).status == "passed"


def test_an_indented_continuation_of_the_humaneval_stub_is_scored_after_the_prompt():
    answer = "    return [s for s in strings if s.startswith(prefix)]\n\nprint('done')\n"
    code = extract_answer_code(PREFIX, answer)
    assert code == "    return [s for s in strings if s.startswith(prefix)]\n"
    assert check_candidate(PREFIX, code).status == "passed"


# Answers the token limit cut off inside a ```python fence that never closes.
CUT_INSIDE_FENCE = {
    "inside the docstring": (
        "Here is the function:\n\n```python\nfrom typing import List\n\n\n"
        "def filter_by_prefix(strings: List[str], prefix: str) -> List[str]:\n"
        '    """ Filter an input list of strings only for ones that start'
    ),
    "inside a nested loop": (
        "```python\ndef filter_by_prefix(strings, prefix):\n    out = []\n"
        "    for s in strings:\n        if s.startswith(pre"
    ),
    "right after a block opens": (
        "```python\ndef filter_by_prefix(strings, prefix):\n    for s in strings:\n"
    ),
}


@pytest.mark.parametrize("answer", CUT_INSIDE_FENCE.values(), ids=CUT_INSIDE_FENCE.keys())
@pytest.mark.parametrize("dataset", ["humaneval", "mbpp"])
def test_an_answer_cut_inside_an_unclosed_fence_runs_what_was_written(answer, dataset):
    """It is code, cut short: it runs and fails the tests ("wrong answer"), it is not
    scored as "no code"."""
    prompt = PREFIX.prompt if dataset == "humaneval" else None
    code = extract_code(answer, prompt=prompt, entry_point=PREFIX.entry_point)
    assert "def filter_by_prefix(" in code and "```" not in code, code
    assert ast.parse((prompt or "") + code)
    task = PREFIX if dataset == "humaneval" else replace(PREFIX, dataset="mbpp", tests=(
        "assert filter_by_prefix(['abc', 'b'], 'a') == ['abc']\n"))
    result = check_candidate(task, code)
    assert outcome_kind(result.status, result.stderr, code) == "wrong answer", result.stderr


def test_a_cut_body_continuation_in_an_unclosed_fence_runs_after_the_prompt():
    answer = "```python\n    out = []\n    for s in strings:\n        if s.startswith(pre"
    code = extract_answer_code(PREFIX, answer)
    assert code == "    out = []\n    for s in strings:\n        pass\n"
    assert check_candidate(PREFIX, code).status == "failed"


def test_a_closed_fence_with_code_wins_over_an_unclosed_one_after_it():
    answer = ("```python\n" + PREFIX_FUNCTION + "\n```\n\nExample:\n```python\n"
              "print(filter_by_prefix(['abc', 'b'], 'a'")
    code = extract_answer_code(PREFIX, answer)
    assert "print(" not in code and "pass" not in code
    assert check_candidate(PREFIX, code).status == "passed"
