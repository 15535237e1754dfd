"""The LLM judge's instruction, verdict parsing, and one call to a real OpenAI-compatible
endpoint (our own server on the tiny random model, which never answers a label)."""

import pytest

from evaluation.judge import LABELS, ask_judge, judge_messages, parse_verdict
from tests.support.inference_server import tiny_server

KEY = "judge-test-key"


def test_the_judge_sees_the_pair_blind_in_the_order_given():
    system, user = judge_messages("Add 2 and 3.", "five", "5")
    assert system["role"] == "system" and "[[A>B]]" in system["content"]
    assert user["content"].index("five") < user["content"].index("5\n<|The End")
    assert "condition" not in user["content"].lower()


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("Reason: B is wrong.\nVerdict: [[A>>B]]", "A>>B"),
        ("Both fine. [[A=B]]", "A=B"),
        ("[[B>A]] because ... so [[B>A]]", "B>A"),  # the same label twice is one verdict
        ("A is better. [[A>B]] no wait [[B>A]]", None),  # two verdicts: unparseable
        ("I think A is better.", None),
        ("[[A]]", None),  # not one of the labels asked for
        ("", None),
    ],
)
def test_parse_verdict_takes_exactly_one_label(answer, label):
    assert parse_verdict(answer) == label


def test_labels_map_to_the_shown_position():
    assert {LABELS[k] for k in ("A>>B", "A>B")} == {"first"}
    assert {LABELS[k] for k in ("B>>A", "B>A")} == {"second"} and LABELS["A=B"] == "tie"


def test_ask_judge_records_an_unparseable_answer_with_its_tokens(tmp_path):
    with tiny_server(
        tmp_path, policy={"kind": "dense"}, name="tiny-judge", api_key=KEY
    ) as url:  # fmt: skip
        answer = ask_judge(
            base_url=url, model="tiny-judge", api_key=KEY, prompt="w1 w2", first="w3",
            second="w4", max_tokens=6, max_retries=0,
        )  # fmt: skip
    assert answer.label is None and answer.winner is None and answer.text
    assert answer.model == "tiny-judge"
    assert answer.prompt_tokens > 0 and 1 <= answer.completion_tokens <= 6
