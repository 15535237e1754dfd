"""`manage.py delete_rater_data`: a rater's personal data goes, all or nothing; their
judgments go too (freeing the pairs) or stay under an inactive pseudonymous account."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotations import services
from annotations.models import (
    Assignment,
    CriterionRating,
    Enrolment,
    Invite,
    Judgment,
    Study,
)
from annotations.selectors import judgments_for_analysis
from annotations.services import rater_data
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db

PID = "60aa11bb22cc33dd44ee55ff"


@pytest.fixture
def judged():
    """Two items, three conditions (6 pairs), overlap 1: an invite rater and a Prolific
    rater judged one pair each and hold one open assignment each; two pairs are free."""
    study = make_study(n_items=2, overlap=1, name="deletion")
    Study.objects.filter(id=study.id).update(consent_text="We store your choices.")
    criterion = study.criteria.create(name="correct", question="Correct?")
    finish_generations(study)
    invite = services.invite_create(study=study)
    invited = services.invite_redeem(invite=invite)
    prolific = services.prolific_rater_get(
        study=study, prolific_pid=PID, prolific_study_id="ST1", session_id="SE1"
    )
    for rater in (invited, prolific):
        enrolment = services.enrolment_get(study=study, rater=rater)
        services.enrolment_consent(enrolment=enrolment, profile={"background": "student"})
        assignment = services.assignment_next(study=study, rater=rater)
        services.judgment_submit(assignment=assignment, choice="left", rationale="because",
                                 ratings={criterion.id: (4, 2)})
        services.assignment_next(study=study, rater=rater)  # left open
    return study, invited, prolific


def _counts() -> dict[str, int]:
    User = get_user_model()
    return {model.__name__: model.objects.count()
            for model in (User, Enrolment, Invite, Assignment, Judgment, CriterionRating)}


def _run(*args) -> str:
    out = io.StringIO()
    call_command("delete_rater_data", *args, stdout=out)
    return out.getvalue()


def test_deletes_personal_data_and_judgments_and_frees_the_pairs(judged):
    study, invited, prolific = judged
    before = _counts()
    held = set(Assignment.objects.filter(rater=prolific).values_list("pair_id", flat=True))
    output = _run(prolific.get_username())
    assert not get_user_model().objects.filter(id=prolific.id).exists(), "the account stays"
    assert not Enrolment.objects.filter(prolific_pid=PID).exists(), "the Prolific id stays"
    assert not Assignment.objects.filter(rater_id=prolific.id).exists()
    after = _counts()
    assert before["Judgment"] - after["Judgment"] == 1
    assert before["CriterionRating"] - after["CriterionRating"] == 1
    assert before["Assignment"] - after["Assignment"] == 2
    assert after["Invite"] == before["Invite"], "the other rater's invite was deleted"
    assert Judgment.objects.filter(assignment__rater=invited).count() == 1, "others' work went"
    assert "1 judgment(s) with their ratings deleted" in output
    assert "2 assignment(s) deleted: their pairs can be assigned again" in output
    newcomer = get_user_model().objects.create_user("newcomer")
    services.enrolment_consent(enrolment=services.enrolment_get(study=study, rater=newcomer))
    while (a := services.assignment_next(study=study, rater=newcomer)) is not None:
        services.judgment_submit(assignment=a, choice="tie")
    given = set(Assignment.objects.filter(rater=newcomer).values_list("pair_id", flat=True))
    assert held <= given, "the deleted rater's pairs were not handed out again"


def test_invite_rater_loses_the_invite_link_too(judged):
    _, invited, _ = judged
    output = _run(invited.get_username())
    assert not Invite.objects.exists(), "the used invite link (a login) stays"
    assert "1 invite link(s) used by the rater deleted" in output


def _counted(study: Study) -> list[dict]:
    """The judgments the analyses count, without who gave them."""
    counted = judgments_for_analysis(study).counted.order_by("id")
    return list(counted.values("id", "assignment__pair_id", "choice", "winner", "created_at"))


def test_keep_judgments_moves_them_to_an_inactive_pseudonym(judged):
    study, _, prolific = judged
    table_before = _counted(study)
    judgment = Judgment.objects.get(assignment__rater=prolific)
    output = _run(prolific.get_username(), "--keep-judgments")
    judgment.refresh_from_db()
    stand_in = judgment.assignment.rater
    assert stand_in.username.startswith("deleted-") and stand_in.username in output
    assert not stand_in.is_active and not stand_in.has_usable_password()
    assert not get_user_model().objects.filter(id=prolific.id).exists()
    enrolment = Enrolment.objects.get(rater=stand_in)
    assert (enrolment.prolific_pid, enrolment.prolific_study_id,
            enrolment.prolific_session_id) == ("", "", ""), "Prolific ids kept"
    assert enrolment.profile == {}, "the rater's profile answers were kept"
    assert enrolment.consented_at is not None
    assert judgment.ratings.count() == 1 and judgment.rationale == "because"
    assert not Assignment.objects.filter(rater=stand_in, judgment__isnull=True).exists(), (
        "the open assignment still holds its pair"
    )
    assert study.raters.filter(id=stand_in.id).exists()
    assert _counted(study) == table_before, "the study's judgments (as analyses count them) changed"


def test_dry_run_changes_nothing_and_says_what_it_would_do(judged):
    _, _, prolific = judged
    before = _counts()
    output = _run(prolific.get_username(), "--dry-run")
    assert "Dry run: nothing was changed" in output
    assert "1 judgment(s) with their ratings deleted" in output
    assert _counts() == before


def test_all_or_nothing(judged, monkeypatch):
    _, _, prolific = judged
    before = _counts()

    def fail(**_):
        raise RuntimeError("disk full")

    # Fails after the assignments and enrolments are deleted, before the account is.
    monkeypatch.setattr(rater_data, "RaterDataDeletion", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        services.rater_data_delete(rater=prolific)
    assert _counts() == before, "a failed deletion left part of its work done"


def test_unknown_and_staff_accounts_are_refused(judged):
    get_user_model().objects.create_user("boss", is_staff=True)
    before = _counts()
    with pytest.raises(CommandError, match="no user 'nobody'"):
        _run("nobody")
    with pytest.raises(CommandError, match="boss is a staff account"):
        _run("boss")
    assert _counts() == before
