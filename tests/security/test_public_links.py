"""A study's public (Prolific) link against invented participant ids (issue 28): 40 made-up
PIDs leased all 30 pairs of a study in 0.6 s, and real raters saw "No pair for you right now"
for the whole 30-minute lease. Account creation is rate-limited per address and per study,
a rater who has answered nothing gets a short lease, and such raters together never hold more
than a share of the unfinished pairs; Prolific's own flow keeps working."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations.models import Assignment, Study
from annotations.services.pairs_assignments import NEWCOMER_LEASES_AT_LEAST
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db

PAIRS = 30


@pytest.fixture
def study(settings) -> Study:
    settings.ENTRY_NEW_ACCOUNTS_PER_IP = 100
    settings.ENTRY_NEW_ACCOUNTS_PER_STUDY = 1000
    study = make_study(n_items=PAIRS // 3, overlap=1)  # three conditions: 3 pairs an item
    finish_generations(study)
    assert study.pairs.count() == PAIRS
    return study


def enter(study: Study, pid: str, *, ip: str = "198.51.100.7") -> Client:
    client = Client(REMOTE_ADDR=ip)
    response = client.get(reverse("prolific_entry", args=[study.id]),
                          {"PROLIFIC_PID": pid, "STUDY_ID": "S1", "SESSION_ID": f"s-{pid}"})
    client.last_status = response.status_code
    return client


def shows_a_pair(client: Client, study: Study) -> bool:
    page = client.get(reverse("rate", args=[study.id])).content.decode()
    return "No pair for you right now" not in page and "judge" in page


def _answer_one(client: Client, study: Study, username: str) -> None:
    client.get(reverse("rate", args=[study.id]))
    mine = Assignment.objects.get(study=study, rater__username=username,
                                  completed_at__isnull=True)
    assert client.post(reverse("judge", args=[mine.id]), {"choice": "tie"}).status_code == 302


def test_invented_ids_cannot_lease_every_pair(study, settings):
    real = enter(study, "REALPARTICIPANT01", ip="203.0.113.9")
    _answer_one(real, study, "prolific-REALPARTICIPANT01")
    for n in range(12):  # twice the newcomers' share of 30 pairs
        client = enter(study, f"FAKE{n:04d}", ip=f"198.51.100.{n + 1}")
        assert client.last_status == 302
        client.get(reverse("rate", args=[study.id]))
    fake = Assignment.objects.filter(study=study, rater__username__startswith="prolific-FAKE")
    share = settings.NEWCOMER_PAIR_SHARE_PERCENT * (PAIRS - 1) // 100  # one pair is judged
    assert fake.count() == max(NEWCOMER_LEASES_AT_LEAST, share) < 12, (
        f"{fake.count()} of {PAIRS} pairs leased by invented ids")
    # A rater who has answered goes on getting pairs.
    assert shows_a_pair(real, study)
    # A new participant waits at most for the invented ids' short first leases to lapse.
    fake.update(lease_until=timezone.now() - timedelta(seconds=1))
    late = enter(study, "REALPARTICIPANT02", ip="203.0.113.10")
    assert shows_a_pair(late, study)


def test_a_first_lease_is_short_and_lengthened_once_the_rater_answers(study, settings):
    client = enter(study, "PIDFIRSTLEASE01")
    client.get(reverse("rate", args=[study.id]))
    first = Assignment.objects.get(study=study, rater__username="prolific-PIDFIRSTLEASE01")
    held_for = first.lease_until - timezone.now()
    assert held_for <= timedelta(minutes=settings.FIRST_LEASE_MINUTES)
    assert held_for < timedelta(minutes=study.lease_minutes)
    response = client.post(reverse("judge", args=[first.id]), {"choice": "left"})
    assert response.status_code == 302
    client.get(reverse("rate", args=[study.id]))
    second = Assignment.objects.filter(study=study, completed_at__isnull=True).get(
        rater__username="prolific-PIDFIRSTLEASE01")
    assert second.lease_until - timezone.now() > timedelta(minutes=study.lease_minutes - 1)


def test_new_accounts_per_address_are_limited_returning_participants_are_not(study, settings):
    settings.ENTRY_NEW_ACCOUNTS_PER_IP = 3
    for n in range(3):
        assert enter(study, f"SAMEADDR{n}").last_status == 302
    refused = enter(study, "SAMEADDR3")
    assert refused.last_status == 429
    assert not get_user_model().objects.filter(username="prolific-SAMEADDR3").exists()
    assert enter(study, "SAMEADDR0").last_status == 302, "a returning participant was refused"
    assert enter(study, "OTHERADDR0", ip="203.0.113.50").last_status == 302


def test_new_accounts_per_study_are_limited(study, settings):
    settings.ENTRY_NEW_ACCOUNTS_PER_STUDY = 4
    statuses = [enter(study, f"STUDYCAP{n}", ip=f"203.0.113.{n + 1}").last_status
                for n in range(6)]
    assert statuses == [302] * 4 + [429] * 2
    other = make_study(n_items=1, overlap=1, name="Another study")
    assert enter(other, "STUDYCAP9", ip="203.0.113.99").last_status == 302
