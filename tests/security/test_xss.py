"""Hostile text everywhere a person or the model can put it, rendered by every rater page,
staff page, admin page and the HTML report: it must come out as inert text.

Every payload sets `window.__xss` if it ever runs; the browser test checks that flag in a
real chromium, the other tests read the HTML."""

from __future__ import annotations

import io
import zipfile
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import Resolver404, resolve, reverse

from analysis.plots import ratings_figure
from annotations import services
from annotations.models import (
    Assignment,
    Condition,
    Criterion,
    CriterionRating,
    Enrolment,
    Generation,
    GoldAnswer,
    Item,
    Judgment,
    Study,
)
from tests.security.conftest import PASSWORD, client_for
from tests.support.browser import browser_page, log_in

# Each fits the shortest field it is put in (50 characters), so PostgreSQL takes it too.
PAYLOADS = [
    "<script>window.__xss=1</script>",
    "<img src=x onerror=window.__xss=1>",
    '"><svg onload=window.__xss=1>',
    "'><svg onload=window.__xss=1>",
    '" autofocus onfocus="window.__xss=1',
    "javascript:window.__xss=1",
    '{{ "tplmark"|upper }}',
    "{% filter upper %}tplmarkb{% endfilter %}",
    "</textarea><script>window.__xss=1</script>",
    "<div hx-get=/logout/ hx-trigger=load>",
    "</code></pre><a href=javascript:window.__xss=1>",
]
TEXT = "\n".join(PAYLOADS)
# What a rendered template tag of a payload would print.
TEMPLATE_MARK = "TPLMARK"
MARKUP = set("<>\"'")
# Attributes that may hold hostile text as data: it is only ever shown, never run.
DATA_ATTRIBUTES = {"value", "title", "alt", "aria-label", "placeholder", "data-value"}
# Links: a payload may sit percent-encoded in a query string; only a javascript: URL runs.
URL_ATTRIBUTES = {"href", "src", "action", "formaction"}
# Our own fragments that a page loads with itself; an element loading anything else on load
# was injected.
LOAD_FRAGMENTS = {"study_results", "study_condition_sparsity"}


class _Markup(HTMLParser):
    """The elements, attributes and script text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict]] = []
        self.script_text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        self.elements.append((tag, attributes))
        self._in_script = tag == "script" and attributes.get("type") != "application/json"

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_text.append(data)


def _own_fragment(attributes: dict) -> bool:
    try:
        return resolve(attributes.get("hx-get", "")).url_name in LOAD_FRAGMENTS
    except Resolver404:
        return False


def inert_problems(html: str, where: str) -> list[str]:
    """Why `html` might run a payload: a payload's markup unescaped, a template tag
    evaluated, an element or handler a payload would create, a javascript: link."""
    problems = [
        f"{where}: payload {p!r} appears unescaped"
        for p in PAYLOADS
        if MARKUP & set(p) and p in html
    ]
    if TEMPLATE_MARK in html:
        problems.append(f"{where}: a template tag in user text was evaluated ({TEMPLATE_MARK})")
    markup = _Markup()
    markup.feed(html)
    for tag, attributes in markup.elements:
        if tag == "iframe" or (tag == "img" and attributes.get("src") == "x"):
            problems.append(f"{where}: a payload made a <{tag}> element")
        for name, value in attributes.items():
            if name.startswith("on"):
                problems.append(f"{where}: <{tag} {name}=…> event handler")
            elif name in URL_ATTRIBUTES and value.strip().lower().startswith("javascript:"):
                problems.append(f"{where}: <{tag} {name}={value!r}> runs script")
            elif "__xss" in value and name not in DATA_ATTRIBUTES | URL_ATTRIBUTES:
                problems.append(f"{where}: a payload reached <{tag} {name}={value!r}>")
            elif name == "hx-trigger" and "load" in value and not _own_fragment(attributes):
                problems.append(f"{where}: an injected htmx element fires on load")
    if any("__xss" in text for text in markup.script_text):
        problems.append(f"{where}: a payload is inside a <script>")
    return problems


def hostile_study(rater_a, rater_b) -> Study:
    """A study whose every free-text field a researcher, a rater or the model fills holds
    the payloads: names, descriptions, prompts, outputs, rationales, criteria, gold notes,
    profile questions, a failed generation's error, a javascript: completion URL."""
    study = Study.objects.create(
        name=PAYLOADS[0],
        rater_title=PAYLOADS[0],
        description=TEXT,
        instructions=TEXT,
        consent_text=TEXT,
        completion_code=PAYLOADS[6],
        completion_url=PAYLOADS[5],
        status=Study.Status.OPEN,
        overlap=2,
        profile_questions=[{"name": "background", "label": PAYLOADS[1],
                            "choices": [PAYLOADS[2], PAYLOADS[3]]}],
    )
    policies = [{"kind": "dense"}, {"kind": "static", "threshold": 0.05},
                {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1.0}]
    for position, (name, policy) in enumerate(zip(PAYLOADS[1:4], policies, strict=True)):
        Condition.objects.create(study=study, name=name, policy=policy, position=position)
    criterion = Criterion.objects.create(study=study, name=PAYLOADS[4], question=PAYLOADS[7])
    for task_id in PAYLOADS[8:10]:
        Item.objects.create(study=study, dataset="humaneval", task_id=task_id, prompt=TEXT)
    services.generations_create(study=study)
    generations = list(Generation.objects.filter(item__study=study).order_by("id"))
    for i, generation in enumerate(generations):
        generation.status = Generation.Status.DONE
        generation.text = f"def f():\n    return {i}\n" + TEXT
        generation.active_fraction = 1.0 - 0.1 * generation.condition.position
        generation.tokens_per_s = 10.0 + generation.condition.position
        generation.save()
    Generation.objects.filter(id=generations[-1].id).update(
        status=Generation.Status.FAILED, error=TEXT
    )
    for item in study.items.all():
        services.pairs_create(item=item)
    study.raters.add(rater_a, rater_b)
    for rater in (rater_a, rater_b):
        services.enrolment_get(study=study, rater=rater)
        Enrolment.objects.filter(rater=rater).update(consented_at="2020-01-01T00:00Z")
        assignment = services.assignment_next(study=study, rater=rater)
        judgment, _ = services.judgment_submit(
            assignment=assignment, choice="left", rationale=TEXT[:1000],
            ratings={criterion.id: (4, 2)},
        )
    GoldAnswer.objects.create(pair=study.pairs.order_by("id").last(), winner="a", note=PAYLOADS[10])
    services.invite_create(study=study)
    assert Judgment.objects.count() == 2 and CriterionRating.objects.count() == 2
    return study


@pytest.fixture
def hostile(db, monkeypatch):
    monkeypatch.setattr("reports.build.REPORT_BOOTSTRAP", 0)
    User = get_user_model()
    staff = User.objects.create_superuser("staff-xss", password=PASSWORD)
    rater_a = User.objects.create_user("rater-xss", password=PASSWORD)
    # Usernames are validated by every form, but not by the ORM: staff pages show them.
    rater_b = User.objects.create_user(PAYLOADS[2], password=PASSWORD)
    return staff, rater_a, hostile_study(rater_a, rater_b)


def _html(response) -> str:
    assert response.status_code < 500, f"{response.request['PATH_INFO']}: server error"
    return response.content.decode()


def test_rater_pages_show_payloads_as_text(hostile):
    _, rater, study = hostile
    client = client_for(rater)
    pages = {
        "home": client.get(reverse("home")),
        "rate": client.get(reverse("rate", args=[study.id])),
        "rate (htmx)": client.get(reverse("rate", args=[study.id]), HTTP_HX_REQUEST="true"),
        "consent": client.get(reverse("consent", args=[study.id])),
        "consent with errors": client.post(
            reverse("consent", args=[study.id]), {"profile_background": PAYLOADS[0]}
        ),
    }
    assignment = Assignment.objects.get(rater=rater, judgment__isnull=True)
    criterion = study.criteria.get()
    pages["judge with errors"] = client.post(
        reverse("judge", args=[assignment.id]),
        {"choice": "left", f"c{criterion.id}_left": PAYLOADS[4], "rationale": PAYLOADS[0]},
        HTTP_HX_REQUEST="true",
    )
    Enrolment.objects.filter(rater=rater).update(completed_at="2020-01-01T00:00Z")
    pages["complete"] = client.get(reverse("complete", args=[study.id]))
    Study.objects.filter(id=study.id).update(status=Study.Status.PAUSED)
    pages["paused"] = client.get(reverse("rate", args=[study.id]))
    Study.objects.filter(id=study.id).update(status=Study.Status.OPEN)
    pages["entry error"] = client_for().get(
        reverse("prolific_entry", args=[study.id]), {"PROLIFIC_PID": PAYLOADS[1]}
    )
    rate = _html(pages["rate"])
    assert TEXT.splitlines()[0].replace("<", "&lt;").replace(">", "&gt;") in rate, (
        "the prompt is not on the rate page: the test would check nothing"
    )
    problems = [p for where, r in pages.items() for p in inert_problems(_html(r), where)]
    assert not problems, "\n".join(problems)


def test_staff_pages_and_report_show_payloads_as_text(hostile, tmp_path):
    staff, _, study = hostile
    client = client_for(staff)
    pages = {
        name: client.get(reverse(name, args=[study.id]))
        for name in ("study_detail", "study_results", "study_setup", "study_report",
                     "study_condition_sparsity")
    }
    pages["study_list"] = client.get(reverse("study_list"))
    pages["study_progress"] = client.get(
        reverse("study_progress", args=[study.id]), HTTP_HX_REQUEST="true"
    )
    pages["study_new"] = client.get(reverse("study_new"))
    pages["study_new with errors"] = client.post(
        reverse("study_new"),
        {
            **{field: PAYLOADS[4] for field in ("name", "rater_title", "description",
                                                "instructions", "consent_text",
                                                "completion_code", "prompts",
                                                "task_contains", "prompt_contains")},
            "completion_url": PAYLOADS[5],
            "overlap": PAYLOADS[0],
            "conditions": f'{PAYLOADS[0]} = {{"kind": "{PAYLOADS[1]}"}}\nb = {PAYLOADS[2]}',
            "criteria": f"{PAYLOADS[3]} | {PAYLOADS[8]}",
            "profile_questions": f"{PAYLOADS[0]} | {PAYLOADS[1]} | {PAYLOADS[2]}",
        },
    )
    pages["report.html download"] = client.get(
        reverse("study_report_file", args=[study.id, "report.html"])
    )
    archive = client.get(reverse("study_report_file", args=[study.id, "report.zip"]))
    zipped = zipfile.ZipFile(io.BytesIO(archive.content)).read("report.html").decode()
    assert 'id="plot-alignment"' in _html(pages["study_report"]), "the report has no plots"
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    problems = [p for where, r in pages.items() for p in inert_problems(_html(r), where)]
    problems += inert_problems(zipped, "report.zip/report.html")
    problems += inert_problems((tmp_path / "report.html").read_text(), "study_report command")
    assert not problems, "\n".join(problems)


def test_admin_pages_show_payloads_as_text(hostile):
    staff, _, study = hostile
    client = client_for(staff)
    pages = {}
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages[f"{prefix}_changelist"] = client.get(reverse(f"{prefix}_changelist"))
        obj = model._default_manager.order_by("-pk").first()
        if obj is not None:
            pages[f"{prefix}_change"] = client.get(reverse(f"{prefix}_change", args=[obj.pk]))
    pages["study search"] = client.get(
        reverse("admin:annotations_study_changelist"), {"q": PAYLOADS[0]}
    )
    for page in ("admin:annotations_study_change", "admin:annotations_judgment_change",
                 "admin:auth_user_change"):
        assert page in pages, f"{page} was not rendered: the hostile rows are missing"
    problems = [p for where, r in pages.items() for p in inert_problems(_html(r), where)]
    assert not problems, "\n".join(problems)


def test_the_checker_finds_live_markup():
    """The checks above pass only because the pages escape: unescaped, they fail."""
    assert inert_problems("<p>&lt;script&gt;window.__xss=1&lt;/script&gt;</p>", "ok") == []
    for payload in PAYLOADS:
        if MARKUP & set(payload) or TEMPLATE_MARK.lower() in payload:
            found = inert_problems(f"<p>{payload}</p>".replace("tplmark", TEMPLATE_MARK), "raw")
            assert found, f"an unescaped {payload!r} would go unnoticed"
    assert inert_problems('<a href="JavaScript:alert(1)">x</a>', "link")
    assert inert_problems('<input value="" autofocus onfocus="window.__xss=1">', "attribute")
    assert inert_problems('<pre><code><img src=x onerror=window.__xss=1></code></pre>', "code")


def test_report_plots_survive_mathtext_in_a_condition_name():
    name = "cost $\\frac{$ dense"
    ratings_figure({"conditions": [{"condition": name, "rating": 1000.0, "rating_ci": None}]})


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_payloads_never_run_in_a_browser(live_server, hostile):
    staff, rater, study = hostile
    with browser_page(live_server.url) as page:
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        log_in(page, rater.get_username(), PASSWORD)
        page.goto(reverse("rate", args=[study.id]))
        page.wait_for_selector("#pair .choices")
        assert page.evaluate("window.__xss") is None, "a payload ran on the rate page"
        assert PAYLOADS[0] in page.inner_text("#pair .prompt"), "the prompt is not shown as text"
        assert PAYLOADS[1] in page.inner_text("#pair .sides"), "the output is not shown as text"
        visited = ["rate"]
        for name in ("consent", "complete"):
            page.goto(reverse(name, args=[study.id]))
            visited.append(name)
            assert page.evaluate("window.__xss") is None, f"a payload ran on {visited}"
        page.context.clear_cookies()  # the rater's session ends; staff log in afresh
        log_in(page, staff.get_username(), PASSWORD)
        for name in ("study_detail", "study_setup", "study_report"):
            page.goto(reverse(name, args=[study.id]))
            page.wait_for_load_state("networkidle")
            visited.append(name)
            assert page.evaluate("window.__xss") is None, f"a payload ran on {visited}"
        assert page.url.endswith(reverse("study_report", args=[study.id])), page.url
        assert PAYLOADS[0] in page.title(), "the study name is not shown as text"
    assert not dialogs, f"a payload opened a dialog: {dialogs}"
