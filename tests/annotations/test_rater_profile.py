"""The consent page asks the study's profile questions; "prefer not to say" is always a
choice, and the answers are stored on the rater's enrolment."""

import pytest
from django.test import Client
from django.urls import reverse

from annotations.models import Enrolment, Study
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db

QUESTIONS = [
    {"name": "experience", "label": "Years of <b>Python</b>?", "choices": ["under 1", "over 1"]},
    {"name": "role", "label": "Your role", "choices": ["student", "professional"]},
]


def consenting_study(alice) -> Study:
    study = make_study(n_items=1, raters=[alice])
    Study.objects.filter(id=study.id).update(consent_text="ok", profile_questions=QUESTIONS)
    finish_generations(study)
    return study


def rater_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_consent_page_asks_the_questions_and_stores_the_answers(users):
    _, alice, _ = users
    study = consenting_study(alice)
    client = rater_client(alice)
    html = client.get(reverse("consent", args=[study.id])).content.decode()
    assert "Years of &lt;b&gt;Python&lt;/b&gt;?" in html
    assert html.count('<option value="" selected>Prefer not to say</option>') == 2
    response = client.post(
        reverse("consent", args=[study.id]),
        {"accept": "yes", "profile_experience": "over 1", "profile_role": ""},
    )
    assert response.url == reverse("rate", args=[study.id])
    enrolment = Enrolment.objects.get(study=study, rater=alice)
    assert enrolment.consented_at is not None
    assert enrolment.profile == {"experience": "over 1"}, "prefer not to say is no answer"


def test_an_answer_not_offered_is_refused(users):
    _, alice, _ = users
    study = consenting_study(alice)
    response = rater_client(alice).post(
        reverse("consent", args=[study.id]),
        {"accept": "yes", "profile_experience": "<script>", "profile_role": "student"},
    )
    assert response.status_code == 400
    assert "Choose one of the answers offered." in response.content.decode()
    assert Enrolment.objects.get(study=study, rater=alice).consented_at is None


def test_without_consent_nothing_is_stored(users):
    _, alice, _ = users
    study = consenting_study(alice)
    response = rater_client(alice).post(
        reverse("consent", args=[study.id]), {"profile_role": "student"}
    )
    assert response.status_code == 400
    assert "Tick the box to take part" in response.content.decode()
    assert Enrolment.objects.get(study=study, rater=alice).profile == {}
