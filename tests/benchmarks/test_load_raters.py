"""The load benchmark's client, run in-process against the live test server: the same
rater logic and database checks as `benchmarks/load_raters.py`, no timing assertions."""

import asyncio

import pytest

from annotations.models import Judgment
from benchmarks import load_raters

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_passwords(settings):
    # Real hashing is slow on purpose; this test is about the flow, not the hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.mark.parametrize("flow", ["form", "htmx"])
def test_five_raters_fill_every_pair_exactly_to_its_overlap(live_server, fast_passwords, flow):
    raters = load_raters.raters_create(5)
    study = load_raters.study_create(name=f"load {flow}", n_pairs=9, overlap=3, raters=raters)
    runs, wall_s = asyncio.run(load_raters.raters_run(
        live_server.url, [r.username for r in raters], study_id=study.id, think_s=0,
        max_seconds=60, flow=flow,
    ))
    assert [r.errors for r in runs] == [[]] * 5
    assert all(r.finished for r in runs), "every rater reaches the done page"
    summary = load_raters.summarize(runs, wall_s)
    assert summary.judgments == 27 and summary.errors == 0
    assert load_raters.study_verify(study, accepted={r.username: r.accepted for r in runs}) == []
    # The form posts carried the study's criteria: both sides of both, on every judgment.
    assert {j.ratings.count() for j in Judgment.objects.filter(assignment__pair__study=study)} \
        == {2}


def test_the_checks_catch_a_lost_judgment(live_server, fast_passwords):
    raters = load_raters.raters_create(3)
    study = load_raters.study_create(name="load lost", n_pairs=3, overlap=3, raters=raters)
    runs, _ = asyncio.run(load_raters.raters_run(
        live_server.url, [r.username for r in raters], study_id=study.id, think_s=0,
        max_seconds=60,
    ))
    accepted = {r.username: r.accepted for r in runs}
    assert load_raters.study_verify(study, accepted=accepted) == []
    Judgment.objects.filter(assignment__pair__study=study).first().delete()
    problems = load_raters.study_verify(study, accepted=accepted)
    assert any("completed assignments have no judgment" in p for p in problems), problems
    assert any("not judged by exactly 3" in p for p in problems), problems
    assert any("the client saw 3 judgments accepted, the database holds 2" in p
               for p in problems), problems
