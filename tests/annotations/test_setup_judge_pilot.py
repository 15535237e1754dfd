"""Pilot mode (issue 31): staff run an LLM judge on a study's pairs from the setup page
before launch, and the judge's effect feeds the power planner ("≈ N human judgments
needed"), stated as the judge's effect. Staff only; the verdicts never count as judgments."""

import html

import pytest
from django.test import Client
from django.urls import reverse

from analysis.power import StudyDesign, sample_size
from annotations.models import JudgeVerdict, Judgment, Study
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db

URL, MODEL = "http://127.0.0.1:8001/v1", "dense"
TWO = [("dense", {"kind": "dense"}), ("static", {"kind": "static", "threshold": 0.05})]


def staff_client(users) -> Client:
    client = Client()
    client.force_login(users[0])
    return client


@pytest.fixture
def draft(db):
    study = make_study(n_items=10, overlap=2, conditions=TWO)
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    finish_generations(study)
    return study


def test_run_judge_pilot_makes_both_orders_of_every_pair(users, draft):
    page = staff_client(users).get(reverse("study_setup", args=[draft.id])).content.decode()
    assert "Run judge pilot" in page
    response = staff_client(users).post(
        reverse("study_judge_pilot", args=[draft.id]), {"url": URL + "/", "model": MODEL}
    )
    assert response.status_code == 302 and response["Location"].endswith("#judge-pilot")
    verdicts = JudgeVerdict.objects.filter(pair__study=draft)
    assert verdicts.count() == 2 * draft.pairs.filter(gold_copy=False).count() == 20
    assert set(verdicts.values_list("judge_url", "judge_model")) == {(URL, MODEL)}
    page = staff_client(users).get(reverse("study_setup", args=[draft.id])).content.decode()
    assert "0 of 20 verdicts answered" in page and "20 waiting" in page
    assert 'hx-get="' + reverse("study_judge_pilot_progress", args=[draft.id]) in page


def test_the_judges_effect_feeds_the_power_planner(users, draft):
    staff_client(users).post(reverse("study_judge_pilot", args=[draft.id]),
                             {"url": URL, "model": MODEL})  # fmt: skip
    # The judge prefers dense in 14 of 20 verdicts and calls 0 ties: 70/30.
    for i, verdict in enumerate(JudgeVerdict.objects.filter(pair__study=draft).order_by("id")):
        pair = verdict.pair
        dense_is_a = pair.generation_a.condition.name == "dense"
        dense_won = i < 14
        winner = "a" if dense_won == dense_is_a else "b"
        JudgeVerdict.objects.filter(id=verdict.id).update(status="done", label="A>B",
                                                          winner=winner)  # fmt: skip
    expected = sample_size(
        StudyDesign(conditions=2, win_rate=0.7, tie_rate=0.0, raters_per_pair=2,
                    design="all-pairs"),
        0.8, simulations=400,
    )  # fmt: skip
    response = staff_client(users).get(reverse("study_judge_pilot_progress", args=[draft.id]))
    assert response.status_code == 286  # every verdict is in: polling stops
    page = html.unescape(response.content.decode())
    assert f"≈ {expected['judgments_needed']} human judgments needed" in page
    assert f"{expected['items_needed']} items" in page
    assert "the baseline wins 70 % of the decisive verdicts against static" in page
    assert "the judge's effect, not the humans'" in page
    assert not Judgment.objects.exists()


def test_a_judge_that_sees_no_difference_plans_nothing(users, draft):
    staff_client(users).post(reverse("study_judge_pilot", args=[draft.id]),
                             {"url": URL, "model": MODEL})  # fmt: skip
    JudgeVerdict.objects.filter(pair__study=draft).update(status="done", label="A=B",
                                                          winner="tie")  # fmt: skip
    page = html.unescape(
        staff_client(users).get(reverse("study_setup", args=[draft.id])).content.decode()
    )
    assert "the judge sees no difference between the baseline and static" in page
    assert "≈" not in page


def test_a_bad_endpoint_is_a_form_error(users, draft):
    response = staff_client(users).post(
        reverse("study_judge_pilot", args=[draft.id]), {"url": "ftp://x", "model": ""}
    )
    assert response.status_code == 400
    assert b"Enter a valid URL" in response.content or b"http://" in response.content
    assert not JudgeVerdict.objects.exists()


@pytest.mark.parametrize("name", ["study_judge_pilot", "study_judge_pilot_progress"])
def test_raters_cannot_run_or_watch_a_pilot(users, draft, name):
    rater = Client()
    rater.force_login(users[1])
    call = rater.post if name == "study_judge_pilot" else rater.get
    response = call(reverse(name, args=[draft.id]), {"url": URL, "model": MODEL})
    assert response.status_code == 302 and "/login" in response["Location"]
    assert not JudgeVerdict.objects.exists()
