"""Blinding: no page a rater can reach names the study, a condition, or what the study
varies; raters see the title the researcher chose for them (`Study.rater_title`)."""

import re
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from annotations import services
from annotations.demo import DEMO_RATER_TITLE, demo_seed
from annotations.models import RATER_TITLE_DEFAULT, Calibration, Condition, ModelEntry, Study
from tests.annotations.conftest import finish_generations

pytestmark = pytest.mark.django_db

# What the lab studies, in its own words: none may reach a rater.
POLICY_WORDS = [
    "sparsity",
    "sparse",
    "threshold",
    "dense",
    "neuron",
    "neurons",
    "hot",
    "cold",
    "calibrated",
    "calibration",
    "policy",
    "activation",
    "skipped",
    "lab",
    # Models as conditions (issue 30): which weights made an output is as hidden as the policy.
    "aligned",
    "alignment",
    "λ",
    "fingerprint",
]


class _Shown(HTMLParser):
    """A page's text and attribute values (what a rater can read, in the page or its
    source), leaving out tag names (`<input>` is no leak), the static assets' paths and
    the task itself: the prompt and the two outputs (`<pre>`), which may well say
    "threshold" (HumanEval/0 does)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._pre += tag == "pre"
        for _, value in attrs:
            if value and not value.startswith(settings.STATIC_URL):
                self.parts.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._pre -= tag == "pre"

    def handle_data(self, data: str) -> None:
        if not self._pre:
            self.parts.append(data)


def shown(html: str) -> str:
    parser = _Shown()
    parser.feed(html)
    return " ".join(parser.parts)


def forbidden(study: Study) -> list[str]:
    """The study's name, every condition's name, every word of its policies (kinds, sites,
    families), the key, staff name and path of every model its conditions run, and
    `POLICY_WORDS`."""
    words = set(POLICY_WORDS)
    for condition in study.conditions.select_related("model", "aligned_model"):
        words.add(condition.name)
        for entry in (condition.model, condition.aligned_model):
            if entry is not None:
                words.update({entry.key, entry.path, entry.display_name, entry.fingerprint})
        for key, value in condition.policy.items():
            if isinstance(value, str):
                words.update({key, value})
    return [study.name, *sorted(words)]


def leaks(html: str, study: Study) -> list[str]:
    text = shown(html)
    return [w for w in forbidden(study) if re.search(rf"\b{re.escape(w)}\b", text, re.I)]


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def demo() -> Study:
    """The demo study as `manage.py seed_demo` leaves it (dense's outputs waiting for the
    worker, the sweep for its calibration), with a consent page and instructions."""
    study = demo_seed(n_items=2, max_new_tokens=16)
    services.generations_create(study=study)
    Study.objects.filter(id=study.id).update(
        consent_text="You will compare answers to programming tasks.",
        instructions="Pick the answer that solves the task better.",
        completion_code="C0DE42",
    )
    study.refresh_from_db()
    return study


def calibrate_and_generate(study: Study) -> None:
    """What the worker does: thresholds chosen, outputs written, pairs made."""
    for condition in study.conditions.exclude(policy__kind="dense"):
        Condition.objects.filter(id=condition.id).update(
            policy={**condition.policy, "threshold": 0.05}
        )
    Calibration.objects.filter(condition__study=study).update(status=Calibration.Status.DONE)
    finish_generations(study)


def _on_registered_models(study: Study) -> None:
    """Half the demo's conditions on a registered model, one moved along an alignment vector."""
    description = {"kind": "hf-directory", "architecture": "llama", "context_length": 8192,
                   "shape": {"hidden_size": 576}, "weight_formats": ["BF16"],
                   "parameters": 134515008, "fingerprint": "d4c0ffee5eed"}
    base = ModelEntry.objects.create(key="smol-base", path="/models/smollm2-base",
                                     display_name="SmolLM2 base", status="valid",
                                     description=description)
    dpo = ModelEntry.objects.create(key="smol-dpo", path="/models/smollm2-dpo",
                                    display_name="SmolLM2 DPO", status="valid",
                                    description={**description, "fingerprint": "0ddba11"})
    first, second = study.conditions.exclude(policy__kind="dense")[:2]
    Condition.objects.filter(id=first.id).update(model=base)
    Condition.objects.filter(id=second.id).update(model=base, aligned_model=dpo,
                                                  alignment_lambda=0.5)


def test_every_rater_page_of_the_demo_is_blind(demo):
    study = demo
    _on_registered_models(study)
    words = forbidden(study)
    assert {"dense", "static", "input", "threshold", "static 25% @input"} <= set(words)
    assert {"smol-base", "smol-dpo", "/models/smollm2-dpo", "SmolLM2 DPO"} <= set(words)
    pages: dict[str, str] = {}
    anonymous = Client()

    # Before launch: the study link and an invite link say "not started yet".
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    invite = services.invite_create(study=study)
    pages["not started (study link)"] = anonymous.get(
        reverse("prolific_entry", args=[study.id]) + "?PROLIFIC_PID=p1"
    ).content.decode()
    pages["not started (invite)"] = anonymous.get(
        reverse("invite_entry", args=[invite.token])
    ).content.decode()
    Study.objects.filter(id=study.id).update(status=Study.Status.OPEN)
    pages["study link without its ids"] = anonymous.get(
        reverse("prolific_entry", args=[study.id])
    ).content.decode()
    pages["log in"] = anonymous.get(reverse("login")).content.decode()

    rater = get_user_model().objects.get(username="rater")
    client = login(rater)
    rate = reverse("rate", args=[study.id])
    pages["home"] = client.get(reverse("home")).content.decode()
    pages["consent"] = client.get(reverse("consent", args=[study.id])).content.decode()
    pages["consent refused"] = client.post(reverse("consent", args=[study.id])).content.decode()
    client.post(reverse("consent", args=[study.id]), {"accept": "yes"})
    pages["no pair right now"] = client.get(rate).content.decode()
    assert "No pair for you right now" in pages["no pair right now"]

    calibrate_and_generate(study)
    pages["pair"] = client.get(rate).content.decode()
    pages["pair (htmx)"] = client.get(rate, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="prompt-title"' in pages["pair"] and "<pre" in pages["pair"]
    assignment = services.assignment_next(study=study, rater=rater)
    judge = reverse("judge", args=[assignment.id])
    pages["answer refused"] = client.post(
        judge, {"rationale": "hm"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    Study.objects.filter(id=study.id).update(status=Study.Status.PAUSED)
    pages["paused"] = client.get(rate).content.decode()
    pages["answer while paused"] = client.post(
        judge, {"choice": "left"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    Study.objects.filter(id=study.id).update(status=Study.Status.OPEN)
    pages["not finished"] = client.get(reverse("complete", args=[study.id])).content.decode()
    while (assignment := services.assignment_next(study=study, rater=rater)) is not None:
        last = client.post(
            reverse("judge", args=[assignment.id]), {"choice": "tie"}, HTTP_HX_REQUEST="true"
        )
    pages["last answer"] = last.content.decode()
    pages["all done"] = client.get(rate).content.decode()
    assert "C0DE42" in pages["all done"]
    pages["completion"] = client.get(reverse("complete", args=[study.id])).content.decode()
    Study.objects.filter(id=study.id).update(status=Study.Status.CLOSED)
    pages["closed (404)"] = client.get(rate).content.decode()
    for outage in ("database", "broker", "cache"):
        pages[f"unavailable: {outage}"] = render_to_string(
            "503.html", {"outage": outage, "retry_url": rate}
        )

    found = {name: leaks(html, study) for name, html in pages.items()}
    assert not {name: words for name, words in found.items() if words}, found
    for name in ("not started (study link)", "home", "consent", "pair", "paused", "completion"):
        assert DEMO_RATER_TITLE in pages[name], f"{name}: the title raters see is missing"


def test_a_new_study_has_a_neutral_rater_title_and_staff_can_change_it(users):
    staff, alice, _ = users
    study = Study.objects.create(name="Sparse h at 50 %", status=Study.Status.OPEN)
    study.raters.add(alice)
    assert study.rater_title == RATER_TITLE_DEFAULT
    setup = reverse("study_setup", args=[study.id])
    page = login(staff).get(setup).content.decode()
    assert 'id="rater-title"' in page and RATER_TITLE_DEFAULT in page
    assert "Sparsity preference lab" in page, "staff pages keep the lab's name"

    url = reverse("study_rater_title", args=[study.id])
    refused = login(staff).post(url, {"rater_title": "  "})
    assert refused.status_code == 400 and "This field is required" in refused.content.decode()
    assert login(alice).post(url, {"rater_title": "Mine"}).status_code == 302
    study.refresh_from_db()
    assert study.rater_title == RATER_TITLE_DEFAULT, "a rater changed a study's title"

    response = login(staff).post(url, {"rater_title": "Which answer reads better?"})
    assert response.status_code == 302 and response.url == setup
    study.refresh_from_db()
    assert study.rater_title == "Which answer reads better?"
    home = login(alice).get(reverse("home")).content.decode()
    assert "Which answer reads better?" in home and study.name not in home
