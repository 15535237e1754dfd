"""Every URL the resolver knows, requested (GET and POST, plain and htmx) as anonymous,
rater A, rater B and staff: who reaches what, and what a rater's answers never contain.

A URL added later fails `test_every_url_is_classified` until it is given an audience in
`URLS` below, so no page goes out without a decision about who may see it."""

from __future__ import annotations

import itertools
from urllib.parse import urlsplit

import pytest
from django.contrib import admin
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from annotations.models import Condition, ConditionServer, ModelEntry
from tests.security.conftest import PASSWORD, client_for, rater_secrets

pytestmark = pytest.mark.django_db

ANYONE = "anyone"  # the entry points: reached without logging in
RATER = "rater"  # a logged-in rater's own pages; another rater's study is a 404
OWNER = "owner"  # one rater's object (an assignment): anyone else gets a 404
STAFF = "staff"  # staff only; everyone else is sent to log in

# URL name -> (audience, the methods its view serves). Every other method must be a 405.
URLS = {
    "login": (ANYONE, {"GET", "POST"}),
    "logout": (ANYONE, {"POST"}),
    "prolific_entry": (ANYONE, {"GET"}),
    "invite_entry": (ANYONE, {"GET"}),
    "home": (RATER, {"GET"}),
    "rate": (RATER, {"GET"}),
    "consent": (RATER, {"GET", "POST"}),
    "complete": (RATER, {"GET"}),
    "judge": (OWNER, {"GET", "POST"}),
    "study_list": (STAFF, {"GET"}),
    "study_new": (STAFF, {"GET", "POST"}),
    "study_setup": (STAFF, {"GET"}),
    "study_calibration": (STAFF, {"GET"}),
    "study_calibration_retry": (STAFF, {"POST"}),
    "condition_fields": (STAFF, {"GET"}),
    "condition_add": (STAFF, {"POST"}),
    "condition_sweep": (STAFF, {"POST"}),
    "condition_count": (STAFF, {"POST"}),
    "study_preview": (STAFF, {"GET", "POST"}),
    "study_rater_title": (STAFF, {"POST"}),
    "study_launch": (STAFF, {"POST"}),
    "study_gold": (STAFF, {"POST"}),
    "study_gold_settings": (STAFF, {"POST"}),
    "study_pause": (STAFF, {"POST"}),
    "study_close": (STAFF, {"POST"}),
    "invite_new": (STAFF, {"POST"}),
    "export_preferences": (STAFF, {"GET"}),
    "study_detail": (STAFF, {"GET"}),
    "study_progress": (STAFF, {"GET"}),
    "study_generate": (STAFF, {"POST"}),
    "study_cancel": (STAFF, {"POST"}),
    "study_resume": (STAFF, {"POST"}),
    "study_report": (STAFF, {"GET"}),
    "study_report_file": (STAFF, {"GET"}),
    "study_results": (STAFF, {"GET"}),
    "study_condition_sparsity": (STAFF, {"GET"}),
    "study_judge_pilot": (STAFF, {"POST"}),
    "study_judge_pilot_progress": (STAFF, {"GET"}),
    "study_servers": (STAFF, {"GET"}),
    "condition_server_start": (STAFF, {"POST"}),
    "condition_server_stop": (STAFF, {"POST"}),
    "condition_lambda_sweep": (STAFF, {"POST"}),
    "model_list": (STAFF, {"GET", "POST"}),
    "model_revalidate": (STAFF, {"POST"}),
}
# The whole admin site (`admin/…`) is staff only: see test_admin_is_staff_only.
ADMIN_NAMESPACE = "admin"
QUERY = {"prolific_entry": "?PROLIFIC_PID=WALKPID0001&STUDY_ID=STUDY0001&SESSION_ID=walk"}
POST_DATA = {
    "login": {"username": "nobody-walk", "password": "not-the-password"},
    "judge": {"choice": "tie"},
    "consent": {"accept": "yes"},
    "study_rater_title": {"rater_title": "Compare two answers"},
    "study_gold": {"winner": "a"},
    "study_gold_settings": {"gold_rate": "0.1", "gold_block_after": "2"},
    # Sent when the savepoint commits, which it never does: no judge job leaves the walk.
    "study_judge_pilot": {"url": "http://127.0.0.1:9/v1", "model": "walk-judge"},
}
ROLES = ["anonymous", "rater_a", "rater_b", "staff"]


def url_patterns(resolver: URLResolver | None = None, prefix: str = "") -> list[tuple]:
    """(name, route, parameter names) of every pattern; the admin site is one entry."""
    resolver = resolver or get_resolver()
    found = []
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if pattern.namespace == ADMIN_NAMESPACE:
                found.append((ADMIN_NAMESPACE, route, ()))
            else:
                found += url_patterns(pattern, route)
        elif isinstance(pattern, URLPattern):
            found.append((pattern.name, route, tuple(pattern.pattern.converters)))
    return found


def test_every_url_is_classified():
    patterns = url_patterns()
    unclassified = [
        f"{route!r} (name {name!r})"
        for name, route, _ in patterns
        if name != ADMIN_NAMESPACE and name not in URLS
    ]
    assert not unclassified, (
        f"URL(s) {', '.join(unclassified)} have no audience: add them to URLS in {__file__} "
        "(anyone / rater / owner / staff) so the walk checks who reaches them"
    )
    stale = sorted(set(URLS) - {name for name, _, _ in patterns})
    assert not stale, f"URLS names {stale} that no longer exist: remove them"
    assert any(name == ADMIN_NAMESPACE for name, _, _ in patterns), "the admin site is not routed"


def _serving(world) -> dict:
    """A condition still waiting for its calibration (staff asking to serve it get the page's
    409, so the walk starts no model server) and a server record whose process is long gone
    (stopping it only marks it stopped), and a registered model (revalidating it sends its
    job when the savepoint commits, which it never does)."""
    waiting = Condition.objects.create(
        study=world.study, name="cond-waiting-w9p", policy={"kind": "static"}
    )
    server = ConditionServer.objects.create(
        condition=waiting, port=9, pid=1, model_name="cond-waiting-w9p"
    )
    entry = ModelEntry.objects.create(key="walk-model-w9p", path="/nonexistent/walk-model")
    return {"condition_id": waiting.id, "server_id": server.id, "entry_id": entry.id}


def _arguments(
    world, role: str, name: str, params: tuple, *, others: bool, serving: dict
) -> dict:
    rater = {"rater_a": world.rater_a, "rater_b": world.rater_b}.get(role, world.rater_a)
    values = {
        **dict.fromkeys(("condition_id", "server_id", "entry_id"), PLACEHOLDER_ID),
        **serving,
        **(world.others(rater) if others else world.own(rater)),
        "token": world.invite.token,
        "name": "judgments.csv",
    }
    missing = [p for p in params if p not in values]
    assert not missing, f"no test value for parameter(s) {missing} of URL {name!r}: add one"
    return {p: values[p] for p in params}


def _user(world, role: str):
    return {"anonymous": None, "rater_a": world.rater_a, "rater_b": world.rater_b,
            "staff": world.staff}[role]


def _outcome(response) -> str:
    """'login' (sent to a login page), 'reached' (an answer or a redirect elsewhere), or
    the error status."""
    if response.status_code in (301, 302, 303, 307, 308):
        target = urlsplit(response["Location"])
        login_pages = (reverse("login"), reverse("admin:login"))
        if target.path in login_pages and "next=" in target.query:
            return "login"
        return "reached"
    if response.status_code < 300 or response.status_code == 409:  # 409: launch refused
        return "reached"
    return str(response.status_code)


def _expected(audience: str, role: str, served: bool, *, others: bool) -> set[str]:
    if audience == ANYONE:
        return {"reached"} if served else {"405"}
    if role == "anonymous":
        return {"login"}
    if audience == STAFF:
        if role != "staff":
            return {"login"}
        return {"reached"} if served else {"405"}
    if not served:
        return {"405"}
    if audience == OWNER and (others or role == "staff"):
        return {"404"}
    if audience == RATER and others:
        return {"404"}
    if audience == RATER and role == "staff":
        return {"reached", "404"}  # staff are not raters of the study
    return {"reached"}


def _request(user, method: str, url: str, data: dict, htmx: bool):
    """One request in a savepoint that is rolled back, so a POST (close, launch, judge)
    cannot change what the next request sees. Returns (response, body text)."""
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    with transaction.atomic():
        client = client_for(user, REMOTE_ADDR="198.51.100.10")
        if method == "POST":
            response = client.post(url, data, **headers)
        else:
            response = client.get(url, **headers)
        content = (
            b"".join(response.streaming_content) if response.streaming else response.content
        )
        transaction.set_rollback(True)
    return response, content.decode(errors="replace")


@pytest.mark.parametrize("role", ROLES)
def test_who_reaches_what(world, role):
    user = _user(world, role)
    is_rater = role in ("rater_a", "rater_b")
    secrets = rater_secrets(world, user) if is_rater else []
    serving = _serving(world)
    problems = []
    for name, _, params in url_patterns():
        if name == ADMIN_NAMESPACE:
            continue
        audience, methods = URLS[name]
        targets = [False]
        if is_rater and audience in (RATER, OWNER) and set(params) & {"study_id", "assignment_id"}:
            targets.append(True)  # and the same page on the other rater's study / assignment
        for others in targets:
            url = reverse(
                name, kwargs=_arguments(world, role, name, params, others=others, serving=serving)
            )
            url += QUERY.get(name, "")
            for method in ("GET", "POST"):
                served = method in methods
                want = _expected(audience, role, served, others=others)
                htmx_too = is_rater and served and audience in (RATER, OWNER)
                for htmx in (False, True) if htmx_too else (False,):
                    response, body = _request(user, method, url, POST_DATA.get(name, {}), htmx)
                    got = _outcome(response)
                    what = f"{role} {method}{' (htmx)' if htmx else ''} {url}"
                    if got not in want:
                        problems.append(f"{what}: got {got} ({response.status_code}), "
                                        f"expected {' or '.join(sorted(want))}")
                    leaked = [s for s in secrets if s in body]
                    if leaked:
                        problems.append(f"{what}: the response shows {leaked}")
    assert not problems, f"{len(problems)} access problem(s):\n" + "\n".join(problems)


def _admin_requests() -> list[tuple[str, str]]:
    """(method, url): the admin's index and app page, and for each registered model its
    list, a POST to its add form and its first object's change, history and delete pages."""
    requests = [("GET", reverse("admin:index")),
                ("GET", reverse("admin:app_list", args=["annotations"]))]
    for model in admin.site._registry:
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        requests += [("GET", reverse(f"{prefix}_changelist")), ("POST", reverse(f"{prefix}_add"))]
        obj = model._default_manager.order_by("pk").first()
        if obj is not None:
            requests += [("GET", reverse(f"{prefix}_{view}", args=[obj.pk]))
                         for view in ("change", "history", "delete")]
    return requests


@pytest.mark.parametrize("role", ["anonymous", "rater_a", "staff"])  # B is a rater like A
def test_admin_is_staff_only(world, role):
    user = _user(world, role)
    problems = []
    for method, url in _admin_requests():
        if role == "staff" and method == "POST":
            continue  # an empty add form: not a question of access
        response, _ = _request(user, method, url, {}, htmx=False)
        got = _outcome(response)
        want = "reached" if role == "staff" else "login"
        if got != want:
            problems.append(f"{role} {method} {url}: got {got} ({response.status_code}), "
                            f"expected {want}")
    assert not problems, f"{len(problems)} admin access problem(s):\n" + "\n".join(problems)


def test_completion_code_only_after_the_last_pair(world):
    """The code is the rater's proof of work on Prolific: asking for the end page early,
    or being blocked, must not reveal it."""
    from annotations.models import Enrolment, Study

    Study.objects.filter(id=world.study.id).update(
        completion_code="CODE-7Q2W", completion_url="javascript:alert(document.cookie)"
    )
    client = client_for(world.rater_a)
    early = client.get(reverse("complete", args=[world.study.id])).content.decode()
    assert "CODE-7Q2W" not in early, "the completion code is shown before the work is done"
    assert "Not finished yet" in early
    Enrolment.objects.filter(rater=world.rater_a, study=world.study).update(
        completed_at="2020-01-01T00:00Z"
    )
    done = client.get(reverse("complete", args=[world.study.id])).content.decode()
    assert "CODE-7Q2W" in done, "a rater who finished does not get the code"
    assert "javascript:" not in done, "a javascript: completion URL became a link"
    Enrolment.objects.filter(rater=world.rater_a, study=world.study).update(
        blocked_at="2020-01-01T00:00Z"
    )
    blocked = client.get(reverse("complete", args=[world.study.id])).content.decode()
    assert "CODE-7Q2W" not in blocked, "a blocked rater gets the completion code"


def test_entry_links_never_log_in_as_an_existing_account(world):
    """A Prolific id that names an account with a password (`prolific-<id>` made by hand),
    or an invite re-pointed at a staff account, must not log anyone in as that account."""
    from django.contrib.auth import get_user_model

    User = get_user_model()
    User.objects.create_user("prolific-takeover", password=PASSWORD, is_staff=True)
    client = client_for()
    url = reverse("prolific_entry", args=[world.study.id]) + "?PROLIFIC_PID=takeover"
    response = client.get(url)
    assert response.status_code == 400, f"the link logged in: {response.status_code}"
    assert "_auth_user_id" not in client.session
    world.invite.rater = world.staff
    world.invite.save()
    client = client_for()
    assert client.get(reverse("invite_entry", args=[world.invite.token])).status_code == 404
    assert "_auth_user_id" not in client.session, "an invite link logged in a staff account"


# Past the largest row id (a 64-bit signed integer), far past it, and the largest itself.
HUGE_IDS = [2**63 - 1, 2**63, 10**30]
PLACEHOLDER_ID = 918273645


@pytest.mark.parametrize("role", ["anonymous", "rater_a", "staff"])  # B is a rater like A
def test_every_id_out_of_range_is_404(world, role):
    """Every URL with an id, given one no row can have, answers 404 (or sends an anonymous
    visitor to log in): never a 500 (`OverflowError` in the database driver was one, and
    with DEBUG on its page shows the settings)."""
    user = _user(world, role)
    problems = []
    for name, _, params in url_patterns():
        ids = [p for p in params if p.endswith("_id")]
        if name == ADMIN_NAMESPACE or not ids:
            continue
        audience, methods = URLS[name]
        for huge in HUGE_IDS:
            kwargs = _arguments(world, role, name, params, others=False, serving={})
            kwargs.update(dict.fromkeys(ids, PLACEHOLDER_ID))  # reverse() refuses huge ones
            url = reverse(name, kwargs=kwargs).replace(str(PLACEHOLDER_ID), str(huge))
            url += QUERY.get(name, "")
            for method in sorted(methods):
                try:
                    response, _ = _request(user, method, url, POST_DATA.get(name, {}), False)
                except Exception as error:  # noqa: BLE001 - the walk names every failure
                    problems.append(f"{role} {method} {url}: {type(error).__name__}: {error}")
                    continue
                got = _outcome(response)
                want = {"404", "login"} if role == "anonymous" and audience != ANYONE else {"404"}
                if audience == STAFF and role != "staff":
                    want = {"404", "login"}
                if got not in want:
                    problems.append(f"{role} {method} {url}: got {got} ({response.status_code})")
    assert not problems, f"{len(problems)} out-of-range id(s) not a 404:\n" + "\n".join(problems)


def test_admin_objects_out_of_range_are_not_found(world):
    problems = []
    for model, huge in itertools.product(admin.site._registry, HUGE_IDS):
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        for view in ("change", "history", "delete"):
            url = reverse(f"{prefix}_{view}", args=[huge])
            try:
                response, _ = _request(world.staff, "GET", url, {}, htmx=False)
            except Exception as error:  # noqa: BLE001 - the walk names every failure
                problems.append(f"GET {url}: {type(error).__name__}: {error}")
                continue
            if response.status_code not in (302, 404):
                problems.append(f"GET {url}: {response.status_code}")
    assert not problems, "\n".join(problems)
