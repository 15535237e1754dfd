"""A small world for the security tests: staff, two raters in one study (each with an open
assignment), a study only the second rater is in, an invite, Prolific ids."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from annotations import services
from annotations.models import Assignment, Enrolment, Invite, Study
from tests.annotations.conftest import finish_generations, make_study

# Distinctive, so a leak cannot hide behind an ordinary word.
CONDITIONS = [
    ("cond-baseline-q7x", {"kind": "dense"}),
    ("cond-sparse-k3z", {"kind": "static", "threshold": 0.05}),
]
PID_A = "PIDAAAA1111aaaa2222bbbb3"
PID_B = "PIDBBBB9999cccc8888dddd7"
PASSWORD = "pw-security-123"


@dataclass
class World:
    staff: object
    rater_a: object
    rater_b: object
    study: Study
    study_only_a: Study
    study_only_b: Study
    assignment_a: Assignment
    assignment_b: Assignment
    invite: Invite

    def own(self, rater) -> dict:
        """URL arguments that point at the rater's own things."""
        mine_a = rater == self.rater_a
        return {
            "study_id": self.study.id,
            "assignment_id": (self.assignment_a if mine_a else self.assignment_b).id,
            "pair_id": (self.assignment_a if mine_a else self.assignment_b).pair_id,
        }

    def others(self, rater) -> dict:
        """URL arguments that point at the other rater's things."""
        mine_a = rater == self.rater_a
        return {
            "study_id": (self.study_only_b if mine_a else self.study_only_a).id,
            "assignment_id": (self.assignment_b if mine_a else self.assignment_a).id,
            "pair_id": (self.assignment_b if mine_a else self.assignment_a).pair_id,
        }


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # The real hasher costs ~0.3 s a password on a busy CI machine; these tests log in a lot.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def empty_cache():
    """Login failure counters live in the cache (files under VAR_DIR): none leak in or out."""
    cache.clear()
    yield
    cache.clear()


def client_for(user=None, **defaults) -> Client:
    client = Client(**defaults)
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def world(db) -> World:
    User = get_user_model()
    staff = User.objects.create_superuser("staff-sec", password=PASSWORD)
    rater_a = User.objects.create_user("rater-a-sec", password=PASSWORD)
    rater_b = User.objects.create_user("rater-b-sec", password=PASSWORD)
    study = make_study(n_items=2, conditions=CONDITIONS, raters=[rater_a, rater_b],
                       name="Shared study")
    only_a = make_study(n_items=1, conditions=CONDITIONS, raters=[rater_a], name="Only A")
    only_b = make_study(n_items=1, conditions=CONDITIONS, raters=[rater_b], name="Only B")
    for s in (study, only_a, only_b):
        finish_generations(s)
    assignment_a = services.assignment_next(study=study, rater=rater_a)
    assignment_b = services.assignment_next(study=study, rater=rater_b)
    for rater, pid in ((rater_a, PID_A), (rater_b, PID_B)):
        for s in rater.studies.all():
            services.enrolment_get(study=s, rater=rater)
        Enrolment.objects.filter(rater=rater).update(
            prolific_pid=pid, prolific_study_id="STUDY0001", prolific_session_id=f"S-{pid}"
        )
    return World(
        staff=staff,
        rater_a=rater_a,
        rater_b=rater_b,
        study=study,
        study_only_a=only_a,
        study_only_b=only_b,
        assignment_a=assignment_a,
        assignment_b=assignment_b,
        invite=services.invite_create(study=study),
    )


def rater_secrets(world: World, viewer) -> list[str]:
    """What a rater must never see: condition names, policies, the other rater's ids."""
    conditions = world.study.conditions.all()
    other = world.rater_b if viewer == world.rater_a else world.rater_a
    other_pid = PID_B if viewer == world.rater_a else PID_A
    return [
        *(c.name for c in conditions),
        *(c.policy_text() for c in conditions),
        "threshold",
        other.get_username(),
        other_pid,
    ]
