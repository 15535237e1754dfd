"""Completion only for work done: the "no pair right now" page, the study's minimum of
judgments, one open assignment per rater (also under parallel requests), and study links
before launch with the staff preview."""

import threading
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connections, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import services
from annotations.models import (
    Assignment,
    Calibration,
    Enrolment,
    Generation,
    Invite,
    Judgment,
    Study,
)
from annotations.services import pairs_assignments
from tests.annotations.conftest import expire, finish_generations, make_study

pytestmark = pytest.mark.django_db

CODE = "C0DE42"


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def two_condition_study(*, raters, n_items=1, overlap=1, **fields) -> Study:
    study = make_study(n_items=n_items, overlap=overlap, raters=raters,
                       conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})])
    Study.objects.filter(id=study.id).update(completion_code=CODE, **fields)
    study.refresh_from_db()
    return study


def test_a_rater_who_finds_every_pair_leased_waits_and_gets_no_code(users):
    _, alice, bob = users
    study = two_condition_study(raters=[alice, bob])
    finish_generations(study)
    held = services.assignment_next(study=study, rater=alice)
    bob_client = login(bob)
    html = bob_client.get(reverse("rate", args=[study.id])).content.decode()
    assert "No pair for you right now" in html and CODE not in html
    assert 'hx-trigger="every 5s"' in html, "the waiting page polls"
    assert "You have waited" in html
    assert Enrolment.objects.get(study=study, rater=bob).completed_at is None
    assert CODE not in bob_client.get(reverse("complete", args=[study.id])).content.decode()
    # The poll hands out the pair as soon as alice's lease runs out.
    expire(held)
    fragment = bob_client.get(reverse("rate", args=[study.id]), HTTP_HX_REQUEST="true")
    assert 'id="prompt-title"' in fragment.content.decode()
    assert Assignment.objects.get(rater=bob).pair_id == held.pair_id


def test_the_waiting_page_counts_the_time_waited(users, monkeypatch):
    _, alice, bob = users
    study = two_condition_study(raters=[alice, bob])
    finish_generations(study)
    services.assignment_next(study=study, rater=alice)
    bob_client = login(bob)
    start = timezone.now()
    bob_client.get(reverse("rate", args=[study.id]))
    later = start + timezone.timedelta(minutes=2, seconds=5)
    monkeypatch.setattr(timezone, "now", lambda: later)
    html = bob_client.get(reverse("rate", args=[study.id]), HTTP_HX_REQUEST="true")
    assert "You have waited 2 min" in html.content.decode()


def test_while_outputs_are_still_generating_the_rater_waits(users):
    _, alice, _ = users
    study = two_condition_study(raters=[alice])
    services.generations_create(study=study)
    assert Generation.objects.filter(item__study=study, status="pending").exists()
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    assert "No pair for you right now" in html and CODE not in html
    assert Enrolment.objects.get(study=study, rater=alice).completed_at is None


def test_while_a_condition_is_being_calibrated_the_rater_waits(users):
    """The demo opens while its sweep is calibrated: dense's outputs alone make no pair, and
    the rater was told "No more pairs for you … contact the researchers"."""
    _, alice, _ = users
    study = two_condition_study(raters=[alice])
    calibration = Calibration.objects.create(
        condition=study.conditions.get(name="s"), target_sparsity=0.5
    )
    finish_generations(study)  # dense's output only: "s" waits for its thresholds
    assert not study.pairs.exists()
    client = login(alice)
    for status in ("pending", "running"):
        Calibration.objects.filter(id=calibration.id).update(status=status)
        html = client.get(reverse("rate", args=[study.id])).content.decode()
        assert "No pair for you right now" in html, status
    Calibration.objects.filter(id=calibration.id).update(status="failed")
    html = client.get(reverse("rate", args=[study.id])).content.decode()
    assert "No more pairs for you" in html, "a failed calibration brings no pair"


def test_the_code_needs_the_studys_minimum_of_judgments(users):
    _, alice, bob = users
    # Two items, overlap 1: bob judges one pair, alice the other; alice needs 2.
    study = two_condition_study(raters=[alice, bob], n_items=2, min_judgments=2)
    finish_generations(study)
    services.judgment_submit(assignment=services.assignment_next(study=study, rater=bob),
                             choice="tie")
    alice_client = login(alice)
    alice_client.get(reverse("rate", args=[study.id]))
    services.judgment_submit(assignment=Assignment.objects.get(rater=alice), choice="left")
    html = alice_client.get(reverse("rate", args=[study.id])).content.decode()
    assert "No more pairs for you" in html and CODE not in html
    assert "needs 2 judged pairs" in html
    assert Enrolment.objects.get(study=study, rater=alice).completed_at is None
    # Bob, with the default minimum of 1 in a study that asks for 1, completes.
    Study.objects.filter(id=study.id).update(min_judgments=1)
    html = login(bob).get(reverse("rate", args=[study.id])).content.decode()
    assert CODE in html and "All done" in html


def test_a_rater_who_judged_everything_completes_as_before(users):
    _, alice, _ = users
    study = two_condition_study(raters=[alice], n_items=2)
    finish_generations(study)
    while (a := services.assignment_next(study=study, rater=alice)) is not None:
        services.judgment_submit(assignment=a, choice="tie")
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    assert CODE in html and Enrolment.objects.get(study=study, rater=alice).completed_at


def test_the_database_refuses_a_second_open_assignment(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    first, second = study.pairs.all()[:2]
    Assignment.objects.create(pair=first, rater=alice, a_on_left=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        Assignment.objects.create(pair=second, rater=alice, a_on_left=True)
    # Judged or released ones do not count.
    Assignment.objects.filter(pair=first).update(released_at=timezone.now())
    Assignment.objects.create(pair=second, rater=alice, a_on_left=True)


@pytest.mark.parametrize("all_read_first", [False, True], ids=["as-they-come", "all-read-first"])
@pytest.mark.django_db(transaction=True)
def test_parallel_requests_of_one_rater_get_one_assignment(monkeypatch, all_read_first):
    """16 requests of one account at once (the probe that made 7 open leases): every one
    is shown the same pair, and one assignment is open. Run on SQLite and, with
    DATABASE_URL, PostgreSQL.

    `all-read-first` makes the race certain: every request reads the rater's history (no
    open assignment yet) before any of them leases, as a slow server would interleave
    them. SQLite's writers and the test client's threads otherwise rarely overlap there."""
    study = make_study(n_items=4, overlap=3)
    finish_generations(study)
    rater = get_user_model().objects.create_user("hoarder", password="pw-hoarder-123")
    study.raters.add(rater)
    barrier = threading.Barrier(16)
    shown, errors = [], []
    if all_read_first:
        read, first_read = pairs_assignments.rater_history, threading.Barrier(16)
        seen = threading.local()

        def read_then_wait(*args, **kwargs):
            history = read(*args, **kwargs)
            if not getattr(seen, "done", False):
                seen.done = True
                first_read.wait(timeout=30)
            return history

        monkeypatch.setattr(pairs_assignments, "rater_history", read_then_wait)

    def request() -> None:
        try:
            client = login(rater)
            barrier.wait()
            response = client.get(reverse("rate", args=[study.id]))
            assert response.status_code == 200, response.status_code
            html = response.content.decode()
            shown.append(html.split('action="/assignments/')[1].split("/")[0])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    open_ = Assignment.objects.filter(rater=rater).open()
    assert open_.count() == 1, f"{open_.count()} open assignments for one rater"
    assert Counter(shown) == {str(open_.get().id): 16}, "every request shows the same pair"


def test_migration_releases_extra_open_assignments_newest_kept(users):
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "annotations.migrations.0011_one_open_assignment_and_min_judgments"
    )
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    first, second = study.pairs.all()[:2]
    Assignment.objects.create(pair=first, rater=alice, a_on_left=True)
    newest = Assignment.objects.create(pair=second, rater=alice, a_on_left=True,
                                       released_at=timezone.now())
    # Open both again as rows made before the index existed would be (bypassing it).
    with connections["default"].cursor() as cursor:
        cursor.execute("DROP INDEX assignment_one_open_per_rater")
    Assignment.objects.filter(id=newest.id).update(released_at=None)
    migration.release_extra_open(apps, None)
    assert list(Assignment.objects.filter(rater=alice).open()) == [newest]


# --- Links before launch -----------------------------------------------------------------


def test_draft_links_say_not_started_and_create_nothing(users):
    study = make_study(n_items=1)
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    invite = services.invite_create(study=study)
    users_before = get_user_model().objects.count()
    for url in (reverse("prolific_entry", args=[study.id]) + "?PROLIFIC_PID=abc123",
                reverse("invite_entry", args=[invite.token])):
        response = Client().get(url)
        assert response.status_code == 200, url
        assert "has not started yet" in response.content.decode()
        assert "Preview" not in response.content.decode(), "the preview is for staff"
    assert get_user_model().objects.count() == users_before
    assert Invite.objects.get(id=invite.id).rater is None


def test_staff_see_a_preview_link_on_a_draft_link(users):
    staff, _, _ = users
    study = make_study(n_items=1)
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    url = reverse("prolific_entry", args=[study.id]) + "?PROLIFIC_PID=abc123"
    html = login(staff).get(url).content.decode()
    assert reverse("study_preview", args=[study.id]) in html


def test_preview_shows_real_pairs_and_stores_nothing(users):
    staff, _, _ = users
    study = make_study(n_items=2)
    criterion = study.criteria.create(name="readability", question="How readable?")
    finish_generations(study)
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    client = login(staff)
    url = reverse("study_preview", args=[study.id])
    html = client.get(url).content.decode()
    assert "Nothing you choose here is stored" in html and "Prompt &lt;b&gt;" in html
    before = (Assignment.objects.count(), Judgment.objects.count(), Enrolment.objects.count())
    missing = client.post(f"{url}?n=0", {"choice": "left", "rationale": "kept"})
    assert "kept" in missing.content.decode() and 'id="error-summary"' in missing.content.decode()
    answered = client.post(f"{url}?n=0", {"choice": "left", f"c{criterion.id}_left": "4",
                                          f"c{criterion.id}_right": "2"})
    assert answered.status_code == 302 and answered["Location"].endswith("?n=1")
    assert (Assignment.objects.count(), Judgment.objects.count(),
            Enrolment.objects.count()) == before


def test_preview_is_staff_only(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    response = login(alice).get(reverse("study_preview", args=[study.id]))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_preview_without_pairs_shows_no_full_progress_bar_and_names_the_button(users):
    """Before generation the preview read '0 judged · 0 to go' under a full progress bar and
    sent the researcher to a 'Generate' button the study page does not have."""
    staff, _, _ = users
    study = make_study(n_items=1)
    Study.objects.filter(id=study.id).update(status=Study.Status.DRAFT)
    html = login(staff).get(reverse("study_preview", args=[study.id])).content.decode()
    assert "No pairs to preview yet" in html
    assert "<progress" not in html and "0 to go" not in html
    assert "“Create and enqueue missing generations”" in html
