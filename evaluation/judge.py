"""An LLM judge: one blind pair, asked of any OpenAI-compatible endpoint (issue 31).

The judge sees what a human rater sees (the prompt and two outputs, no condition, no model
name) under an Arena-Hard-style instruction that asks for a short reason and then a verdict
label. The study asks each pair in both orders, so a judge that prefers a position shows it.
An answer without exactly one verdict label is recorded as unparseable, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INSTRUCTION = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two "
    "AI assistants to the user prompt displayed below. You will be given assistant A's answer "
    "and assistant B's answer. Your job is to evaluate which assistant's answer is better.\n\n"
    "Consider correctness first, then helpfulness, relevance and concision. Do not let the "
    "order in which the responses were presented or their length influence your decision.\n\n"
    "Give a short reason (at most three sentences), then output your final verdict on its own "
    "line as exactly one of these labels:\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'Example output: "Reason: ... Verdict: [[A>B]]".'
)

# Verdict label -> which shown response wins: "first" (shown as A), "second" (B) or "tie".
LABELS = {"A>>B": "first", "A>B": "first", "A=B": "tie", "B>A": "second", "B>>A": "second"}
_LABEL = re.compile(r"\[\[(A>>B|A>B|A=B|B>A|B>>A)\]\]")


def judge_messages(prompt: str, first: str, second: str) -> list[dict]:
    """The chat messages for one pair, ``first`` shown as assistant A."""
    user = (
        f"<|User Prompt|>\n{prompt}\n\n"
        f"<|The Start of Assistant A's Answer|>\n{first}\n<|The End of Assistant A's Answer|>\n\n"
        f"<|The Start of Assistant B's Answer|>\n{second}\n<|The End of Assistant B's Answer|>"
    )
    return [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": user}]


def parse_verdict(answer: str) -> str | None:
    """The verdict label in ``answer`` (``"A>B"`` ...), or None when it has none or several
    that disagree (unparseable: recorded as such, never guessed)."""
    found = set(_LABEL.findall(answer))
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class JudgeAnswer:
    """What the judge said about one ordered pair."""

    label: str | None  # "A>B" ..., None: unparseable
    winner: str | None  # "first", "second", "tie"; None when unparseable
    text: str  # the whole answer (reason and label)
    model: str  # the model that answered, as the endpoint names it
    prompt_tokens: int | None
    completion_tokens: int | None
    # The served weights' fingerprint, from the extra ``telemetry`` field our own server
    # sends (`inference.serve`); None from an endpoint that sends none.
    fingerprint: str | None = None


def ask_judge(
    *, base_url: str, model: str, api_key: str | None, prompt: str, first: str, second: str,
    max_tokens: int = 256, timeout_s: float = 600.0, max_retries: int = 4,
) -> JudgeAnswer:
    """Ask the judge at ``base_url`` (an OpenAI-compatible ``/v1``) about one ordered pair,
    greedily (temperature 0, seed 0). The ``openai`` client retries connection errors, 408,
    409, 429 and 5xx ``max_retries`` times with exponential backoff (and the server's
    Retry-After); past them its error (``openai.APIError``) is raised for the caller's retry
    rules. Token counts are the endpoint's ``usage`` (None if it sends none)."""
    import openai

    client = openai.OpenAI(
        base_url=base_url, api_key=api_key or "none", timeout=timeout_s, max_retries=max_retries
    )
    reply = client.chat.completions.create(
        model=model, messages=judge_messages(prompt, first, second), max_tokens=max_tokens,
        temperature=0, seed=0,
    )
    text = reply.choices[0].message.content or ""
    label = parse_verdict(text)
    usage = reply.usage
    telemetry = (reply.model_extra or {}).get("telemetry")
    return JudgeAnswer(
        label=label,
        winner=LABELS.get(label) if label else None,
        text=text,
        model=reply.model,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        fingerprint=telemetry.get("model_fingerprint") if isinstance(telemetry, dict) else None,
    )
