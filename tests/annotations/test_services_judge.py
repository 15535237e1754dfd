"""The LLM judge's verdict jobs (issue 31): made for both orders of every ordinary pair,
blind, claimed once, recorded in condition order, unparseable answers kept as such; the task
asks a real OpenAI-compatible endpoint (our own server on the tiny random model)."""

import pytest
from django.core.management import call_command

from annotations import services, tasks
from annotations.models import JudgeVerdict, Judgment, Pair
from evaluation.judge import JudgeAnswer
from tests.annotations.conftest import finish_generations, make_study
from tests.support.inference_server import tiny_server

URL, MODEL = "http://127.0.0.1:9/v1", "judge-model"


def answer(label: str | None, winner: str | None) -> JudgeAnswer:
    return JudgeAnswer(label=label, winner=winner, text=f"Reason: x. Verdict: [[{label}]]",
                       model=MODEL, prompt_tokens=90, completion_tokens=12)  # fmt: skip


@pytest.fixture
def study(db):
    study = make_study(n_items=2)
    finish_generations(study)
    Pair.objects.create(  # an attention check's copy: for humans, not the judge
        study=study, item=study.items.first(), gold_copy=True,
        **{f: getattr(Pair.objects.filter(study=study).first(), f)
           for f in ("generation_a", "generation_b")},
    )  # fmt: skip
    return study


def test_both_orders_of_every_ordinary_pair_once(study):
    ordinary = Pair.objects.filter(study=study, gold_copy=False).count()
    assert services.judge_verdicts_create(study=study, url=URL, model=MODEL) == 2 * ordinary
    assert services.judge_verdicts_create(study=study, url=URL, model=MODEL) == 0
    verdicts = JudgeVerdict.objects.filter(pair__study=study)
    assert not verdicts.filter(pair__gold_copy=True).exists()
    for pair in Pair.objects.filter(study=study, gold_copy=False):
        assert sorted(pair.judge_verdicts.values_list("order", flat=True)) == ["ab", "ba"]


def test_the_judge_sees_the_outputs_in_its_order_and_nothing_else(study):
    services.judge_verdicts_create(study=study, url=URL, model=MODEL)
    ab = JudgeVerdict.objects.filter(pair__study=study, order="ab").first()
    pair = ab.pair
    assert services.judge_verdict_shown(ab) == (
        pair.item.prompt, pair.generation_a.text, pair.generation_b.text
    )
    ba = JudgeVerdict.objects.get(pair=pair, order="ba")
    prompt, first, second = services.judge_verdict_shown(ba)
    assert (first, second) == (pair.generation_b.text, pair.generation_a.text)
    shown = " ".join(services.judge_verdict_shown(ba))
    assert not any(c.name in shown for c in study.conditions.all())


def test_claimed_once_and_recorded_in_condition_order(study):
    services.judge_verdicts_create(study=study, url=URL, model=MODEL)
    ba = JudgeVerdict.objects.filter(pair__study=study, order="ba").first()
    assert services.judge_verdict_claim(verdict_id=ba.id) is not None
    assert services.judge_verdict_claim(verdict_id=ba.id) is None  # held: a repeat gets none
    services.judge_verdict_record(verdict_id=ba.id, answer=answer("A>B", "first"))
    ba.refresh_from_db()
    # Shown first in "ba" order is the pair's generation_b: condition order's B wins.
    assert (ba.status, ba.label, ba.winner) == ("done", "A>B", Judgment.Winner.B)
    assert (ba.prompt_tokens, ba.completion_tokens) == (90, 12) and not ba.unparseable
    ab = JudgeVerdict.objects.get(pair=ba.pair, order="ab")
    services.judge_verdict_claim(verdict_id=ab.id)
    services.judge_verdict_record(verdict_id=ab.id, answer=answer(None, None))
    ab.refresh_from_db()
    assert ab.unparseable and ab.winner == "" and ab.answer
    assert not Judgment.objects.exists()  # never counted with the humans


def test_the_task_asks_a_real_endpoint_and_records_what_it_said(
    study, tmp_path, settings, monkeypatch
):
    settings.JUDGE_MAX_TOKENS, settings.JUDGE_MAX_RETRIES = 4, 0
    monkeypatch.setenv(settings.JUDGE_API_KEY_ENV, "judge-key")
    with tiny_server(
        tmp_path, policy={"kind": "dense"}, name=MODEL, api_key="judge-key", context=1024
    ) as url:
        services.judge_verdicts_create(study=study, url=url, model=MODEL)
        verdict = JudgeVerdict.objects.filter(pair__study=study).first()
        assert tasks.judge(verdict.id) == "unparseable"  # the tiny model answers no label
        assert tasks.judge(verdict.id) == "skipped"  # done: a repeated message does nothing
    verdict.refresh_from_db()
    assert verdict.status == "done" and verdict.unparseable and verdict.answer
    assert verdict.answered_model == MODEL and verdict.prompt_tokens > 0
    assert verdict.answered_fingerprint.startswith("tiny-llama-")  # our server sends it
    assert 1 <= verdict.completion_tokens <= 4
    assert "judge-key" not in str(JudgeVerdict.objects.filter(id=verdict.id).values().get())


def test_an_endpoint_that_fails_fails_the_verdict_with_the_reason(study, settings):
    settings.JUDGE_MAX_RETRIES = 0
    services.judge_verdicts_create(study=study, url=URL, model=MODEL)  # port 9: nothing there
    verdict = JudgeVerdict.objects.filter(pair__study=study).first()
    assert tasks.judge(verdict.id) == "failed"
    verdict.refresh_from_db()
    assert verdict.status == "failed" and "Connection" in verdict.error


def test_judge_study_command_sends_the_verdicts(study, capsys):
    call_command("judge_study", str(study.id), "--url", URL, "--model", MODEL)
    out = capsys.readouterr().out
    total = JudgeVerdict.objects.filter(pair__study=study).count()
    assert f"{total} verdicts" in out and total > 0
