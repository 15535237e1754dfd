"""What the app survives (docs/reliability.md): a broker restarted or down, PostgreSQL
restarted mid-study, duplicate and late submits.

A worker killed with -9 mid-generation is tested in test_worker.py. The broker and
database faults run against PRIVATE servers (tests/support/servers.py) on free ports,
never the machine's shared ones, and are skipped when the server binaries are missing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import services
from annotations.models import Assignment, Generation, Judgment
from tests.annotations.conftest import finish_generations, make_study
from tests.support.servers import (
    celery_broker,
    default_database,
    free_port,
    private_postgres,
    private_redis,
)
from tests.support.worker import celery_worker, wait_for

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "fault-rater-password-7q"  # noqa: S105
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_JUDGE = re.compile(r'action="(/assignments/(\d+)/judge/)"')
_LIKERT = re.compile(r'name="(c\d+_(?:left|right))" value="(\d+)"')


@pytest.fixture
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _log_in(client: httpx.Client, username: str) -> None:
    token = _CSRF.search(client.get("/login/").text).group(1)
    response = client.post(
        "/login/", data={"csrfmiddlewaretoken": token, "username": username,
                         "password": PASSWORD, "next": ""}
    )
    assert response.status_code == 302, response.text[-500:]


def _judgment_form(html: str, choice: str = "left") -> tuple[str, int, dict[str, str]]:
    """The judgment form of a rate page as the browser would post it."""
    action = _JUDGE.search(html)
    assert action is not None, "no pair on the page"
    fields = {"csrfmiddlewaretoken": _CSRF.search(html).group(1), "choice": choice,
              "rationale": "", "time_on_task_ms": "1500"}
    fields.update({name: value for name, value in _LIKERT.findall(html)})
    return action.group(1), int(action.group(2)), fields


def _http(base_url: str, **kwargs) -> httpx.Client:
    # Browsers send Origin with every POST; Django's CSRF check compares it with the host.
    return httpx.Client(base_url=base_url, headers={"Origin": base_url}, timeout=30, **kwargs)


# --- The broker (Redis) restarted mid-run, or down at enqueue -----------------------------


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_redis_down_then_restarted_mid_run_loses_no_generation(tmp_path):
    """Staff press Generate while Redis is down: a clear 503, the rows wait as pending.
    Redis comes back; beat's sweep sends what nobody sent; Redis is killed again while
    the worker generates (losing every queued message) and restarted: the worker
    reconnects, the sweep re-sends, every generation is done exactly once."""
    staff = get_user_model().objects.create_user("staff-redis", is_staff=True)
    study = make_study(n_items=2, conditions=[("dense", {"kind": "dense"}),
                                              ("static", {"kind": "static", "threshold": 0.1})])
    study.max_new_tokens = 4
    study.save()
    rows = Generation.objects.filter(item__study=study)
    log_path = tmp_path / "worker.log"
    with private_redis(tmp_path) as redis, celery_broker(redis.url):
        redis.kill()
        staff_client = Client()
        staff_client.force_login(staff)
        response = staff_client.post(reverse("study_generate", args=[study.id]))
        assert response.status_code == 503
        assert "The task queue is unavailable" in response.content.decode()
        assert sorted(rows.values_list("status", flat=True)) == ["pending"] * 4

        redis.start()
        env = {"CELERY_BROKER_URL": redis.url, "REAP_INTERVAL_S": "2"}
        with celery_worker(log_path, env=env, beat=True, purge=False) as worker:
            wait_for(lambda: rows.filter(status="running").exists(), timeout_s=180,
                     what="the sweep to send the pending rows", log_path=log_path,
                     process=worker)
            redis.kill()  # every queued message is gone with it (no persistence)
            time.sleep(2)
            redis.start()
            wait_for(lambda: not rows.exclude(status="done").exists(), timeout_s=240,
                     what="every generation after the Redis restart", log_path=log_path,
                     process=worker)
            assert worker.poll() is None, "the worker died instead of reconnecting"
    done = list(rows.all())
    assert len(done) == 4
    assert {(g.status, g.attempts) for g in done} == {("done", 1)}, "a row ran twice"
    assert all(g.text.strip() for g in done)
    log = log_path.read_text()
    assert "Connection to broker lost" in log and log.count("Connected to redis://") >= 2


# --- PostgreSQL restarted mid-study -------------------------------------------------------


@pytest.fixture(scope="module")
def private_cluster(django_db_blocker):
    """A private PostgreSQL cluster with a migrated `fault` database."""
    from django.core.management import call_command

    with private_postgres() as cluster:
        cluster.create_database("fault")
        with django_db_blocker.unblock(), default_database(cluster.url("fault")):
            call_command("migrate", verbosity=0)
        yield cluster


def _production_server(tmp_path: Path, database_url: str) -> tuple[subprocess.Popen, str]:
    """gunicorn with DEBUG off (static files collected), one sync worker, kept DB
    connections; returns the process and its base URL."""
    from benchmarks.load_raters import gunicorn_start, production_env

    env = {**production_env(database_url, "filesystem://", tmp_path / "var"), "CACHE_URL": ""}
    subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
                   cwd=ROOT, env={**os.environ, **env}, check=True, timeout=120)
    port = free_port()
    server = gunicorn_start(env, workers=1, threads=1, port=port,
                            log_path=tmp_path / "gunicorn.log")
    return server, f"http://127.0.0.1:{port}"


def test_postgres_restart_mid_study_gives_a_clear_503_and_keeps_judgments_once(
    tmp_path, private_cluster, django_db_blocker
):
    with django_db_blocker.unblock(), default_database(private_cluster.url("fault")):
        rater = get_user_model().objects.create_user("pg-rater", password=PASSWORD)
        study = make_study(n_items=2, overlap=1, raters=[rater], name="pg restart")
        finish_generations(study)
        server, base_url = _production_server(tmp_path, private_cluster.url("fault"))
        rate_url = f"/studies/{study.id}/rate/"
        try:
            with _http(base_url) as client:
                _log_in(client, "pg-rater")
                action, assignment_id, fields = _judgment_form(client.get(rate_url).text)

                # Restarted between two requests: the kept connection is dead, and the health
                # check replaces it before the next request uses it.
                private_cluster.stop()
                private_cluster.start()
                page = client.get(rate_url)
                assert page.status_code == 200 and _judgment_form(page.text)[1] == assignment_id

                # During the outage: a clear 503 page, for pages, posts and htmx alike.
                private_cluster.stop()
                down = client.get(rate_url)
                assert down.status_code == 503
                assert "The database is unavailable" in down.text
                assert "Your submitted judgments are safe" in down.text
                assert down.headers["Retry-After"] == "10"
                assert client.post(action, data=fields).status_code == 503
                htmx = client.post(action, data=fields, headers={"HX-Request": "true"})
                assert htmx.status_code == 503 and htmx.headers["HX-Refresh"] == "true"

                # Back up: the same submit, retried (twice), is recorded once.
                private_cluster.start()
                assert client.post(action, data=fields).status_code == 302
                assert client.post(action, data=fields).status_code == 302
                next_page = client.get(rate_url)
                assert next_page.status_code == 200
                assert _judgment_form(next_page.text)[1] != assignment_id
        finally:
            server.terminate()
            server.wait(timeout=30)
        connections["default"].close()  # this test's own connection died with the restart
        judged = Judgment.objects.filter(assignment__rater=rater)
        assert [j.assignment_id for j in judged] == [assignment_id]
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


@pytest.mark.worker
def test_worker_tasks_wait_out_postgres_restarts_and_complete_once(
    tmp_path, private_cluster, django_db_blocker
):
    """Down while a generation runs: its output is stored once the database is back.
    Down when a task starts: the task retries (autoretry on OperationalError) and runs.
    Either way one row, one attempt."""
    from annotations.tasks import generate

    log_path = tmp_path / "worker.log"
    with django_db_blocker.unblock(), default_database(private_cluster.url("fault")):
        study = make_study(n_items=1, name="pg worker", conditions=[
            ("dense", {"kind": "dense"}), ("static", {"kind": "static", "threshold": 0.1})])
        study.max_new_tokens = 4
        study.save()
        services.generations_create(study=study)
        mid_task, at_start = Generation.objects.filter(item__study=study)

        def status(generation: Generation) -> str:
            connections["default"].close()  # a fresh connection each poll (restarts happen)
            return Generation.objects.get(id=generation.id).status

        with celery_worker(log_path, queues="generation") as worker:
            wait_for(lambda: " ready." in log_path.read_text(), timeout_s=120,
                     what="the worker to be ready", log_path=log_path, process=worker)
            # Claimed, then the model loads and decodes (seconds): the database goes away.
            generate.delay(mid_task.id)
            deadline = time.monotonic() + 120
            while status(mid_task) != "running" and time.monotonic() < deadline:
                time.sleep(0.1)
            private_cluster.stop()
            wait_for(lambda: "database unavailable while storing" in log_path.read_text(),
                     timeout_s=120, what="the worker to wait for the database to store",
                     log_path=log_path, process=worker)
            private_cluster.start()
            wait_for(lambda: status(mid_task) == "done", timeout_s=120,
                     what="the output stored after the restart", log_path=log_path,
                     process=worker)

            private_cluster.stop()
            generate.delay(at_start.id)
            wait_for(lambda: "Retry in" in log_path.read_text(), timeout_s=60,
                     what="the task to retry on the outage", log_path=log_path, process=worker)
            private_cluster.start()
            wait_for(lambda: status(at_start) == "done", timeout_s=180,
                     what="the retried generation", log_path=log_path, process=worker)
        rows = Generation.objects.filter(item__study=study)
        assert rows.count() == 2
        assert {(g.status, g.attempts) for g in rows} == {("done", 1)}
        assert all(g.text.strip() for g in rows)


# --- Duplicate submits: double click, back button, two tabs -------------------------------


def _rater_on_live_server(live_server, name: str, *, n_items: int = 2):
    rater = get_user_model().objects.create_user(name, password=PASSWORD)
    study = make_study(n_items=n_items, overlap=1, raters=[rater], name=f"dup {name}")
    finish_generations(study)
    client = _http(live_server.url)
    _log_in(client, name)
    return rater, study, client


def _post_at_once(sessions: list[httpx.Client], action: str, fields: dict[str, str],
                  headers: dict[str, str]) -> list[int]:
    """POST the same form from every session at the same instant (one thread each)."""
    barrier = threading.Barrier(len(sessions))
    statuses: list[int] = []

    def click(session: httpx.Client) -> None:
        barrier.wait()
        statuses.append(session.post(action, data=fields, headers=headers).status_code)

    threads = [threading.Thread(target=click, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
def test_double_click_concurrent_identical_posts_store_one_judgment(
    live_server, fast_passwords, htmx
):
    """Two identical POSTs at the same instant, from two threads with one session, on
    the live server (real concurrent transactions on PostgreSQL), five rounds."""
    rater, study, client = _rater_on_live_server(live_server, f"double-{int(htmx)}")
    headers = {"HX-Request": "true"} if htmx else {}
    rate_url = f"/studies/{study.id}/rate/"
    second = _http(live_server.url, cookies=client.cookies)
    try:
        for _ in range(5):
            action, assignment_id, fields = _judgment_form(client.get(rate_url).text)
            statuses = _post_at_once([client, second], action, fields, headers)
            assert statuses == ([200, 200] if htmx else [302, 302])
            assert Judgment.objects.filter(assignment_id=assignment_id).count() == 1
    finally:
        second.close()
        client.close()
    assert Judgment.objects.filter(assignment__rater=rater).count() == 5


@pytest.mark.django_db(transaction=True)
def test_back_button_replay_and_a_second_tab_store_one_judgment(live_server, fast_passwords):
    rater, study, tab_a = _rater_on_live_server(live_server, "tabs")
    rate_url = f"/studies/{study.id}/rate/"
    tab_b = _http(live_server.url, cookies=tab_a.cookies)
    try:
        # Two tabs show the same pair (the open assignment is resumed, not doubled).
        action, assignment_id, fields_a = _judgment_form(tab_a.get(rate_url).text, "left")
        _, assignment_b, fields_b = _judgment_form(tab_b.get(rate_url).text, "right")
        assert assignment_b == assignment_id
        assert tab_a.post(action, data=fields_a).status_code == 302
        # The stale tab answers too: the first answer stands, the rater moves on.
        assert tab_b.post(action, data=fields_b).status_code == 302
        next_id = _judgment_form(tab_b.get(rate_url).text)[1]
        assert next_id != assignment_id
        # Back button: the first form is posted again after the next pair was shown.
        assert tab_a.post(action, data=fields_a).status_code == 302
    finally:
        tab_b.close()
        tab_a.close()
    judgment = Judgment.objects.get(assignment__rater=rater)
    assert judgment.assignment_id == assignment_id and judgment.choice == "left"
    open_ = Assignment.objects.filter(rater=rater, judgment__isnull=True)
    assert list(open_.values_list("id", flat=True)) == [next_id], "the replay took no new pair"


# --- The last pairs of a study, wanted by several raters at once -------------------------


@pytest.mark.django_db(transaction=True)
def test_a_pair_another_rater_is_being_given_is_waited_for_not_skipped():
    """A rater whose only remaining pair is locked for a moment by another rater's
    assignment gets it once the lock is released, not the done page (the load benchmark
    found raters sent away early at the end of a study)."""
    from django.db import transaction

    from annotations.models import Pair

    study = make_study(n_items=1, overlap=2,
                       conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})])
    finish_generations(study)
    rater = get_user_model().objects.create_user("last-pair")
    study.raters.add(rater)
    pair = Pair.objects.get(study=study)
    holding, release = threading.Event(), threading.Event()

    def other_rater_being_assigned() -> None:
        try:
            with transaction.atomic():
                services.pair_lock(pair.id)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    other = threading.Thread(target=other_rater_being_assigned)
    other.start()
    assert holding.wait(10)
    threading.Timer(0.5, release.set).start()
    try:
        assignment = services.assignment_next(study=study, rater=rater)
    finally:
        release.set()
        other.join()
    assert assignment is not None and assignment.pair_id == pair.id


# --- An expired lease: reassigned, and the late submit follows the rule ---------------------


def _expire(assignment_id: int) -> None:
    Assignment.objects.filter(id=assignment_id).update(
        lease_until=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.django_db
def test_expired_lease_goes_to_another_rater_and_the_late_submit_is_refused_with_a_message(
    users,
):
    """README: a late answer is refused, with a message, once others filled the pair."""
    _, alice, bob = users
    study = make_study(n_items=1, overlap=1, raters=[alice, bob],
                       conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})])
    finish_generations(study)
    alice_client, bob_client = Client(), Client()
    alice_client.force_login(alice)
    bob_client.force_login(bob)
    rate = reverse("rate", args=[study.id])
    alice_client.get(rate)
    held = Assignment.objects.get(rater=alice)
    assert "No pair for you right now" in bob_client.get(rate).content.decode(), \
        "the lease holds the pair: bob waits"
    _expire(held.id)
    bob_client.get(rate)
    bobs = Assignment.objects.get(rater=bob)
    assert bobs.pair_id == held.pair_id, "the expired pair was reassigned"
    assert bob_client.post(reverse("judge", args=[bobs.id]), {"choice": "tie"}).status_code == 302

    late = alice_client.post(reverse("judge", args=[held.id]), {"choice": "left"})
    assert late.status_code == 200
    assert "Your time for this pair ran out" in late.content.decode()
    assert not Judgment.objects.filter(assignment=held).exists()
    held.refresh_from_db()
    assert held.released_at is not None
    assert Judgment.objects.filter(assignment__pair=held.pair).count() == 1


@pytest.mark.django_db
def test_late_submit_is_accepted_while_the_pair_still_needs_it(users):
    """README: a late answer on an expired lease counts if the pair still needs one."""
    _, alice, _ = users
    study = make_study(n_items=1, overlap=1, raters=[alice])
    finish_generations(study)
    client = Client()
    client.force_login(alice)
    client.get(reverse("rate", args=[study.id]))
    held = Assignment.objects.get(rater=alice)
    _expire(held.id)
    response = client.post(reverse("judge", args=[held.id]), {"choice": "left"})
    assert response.status_code == 302
    assert Judgment.objects.get(assignment=held).choice == "left"
