"""Rater data: deletion on request (`manage.py delete_rater_data`)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from annotations.models import Assignment, Enrolment, Invite, Judgment


@dataclass(frozen=True)
class RaterDataDeletion:
    """What `rater_data_delete` did, or in a dry run would do."""

    username: str
    judgments: int
    assignments_deleted: int
    enrolments: int
    prolific_ids: int
    invites: int
    # Set when the judgments were kept: the inactive stand-in account that now holds them.
    pseudonym: str = ""

    def lines(self) -> list[str]:
        """The summary as sentences, for the command's output."""
        if self.pseudonym:
            kept = (
                f"{self.judgments} judgment(s) kept, now by inactive user {self.pseudonym} "
                f"with {self.enrolments} enrolment(s) (profile answers blanked; Prolific "
                f"ids blanked on {self.prolific_ids})"
            )
        else:
            kept = (
                f"{self.judgments} judgment(s) with their ratings deleted; "
                f"{self.enrolments} enrolment(s) deleted ({self.prolific_ids} with Prolific ids)"
            )
        return [
            f"account {self.username} deleted",
            kept,
            f"{self.assignments_deleted} assignment(s) deleted: their pairs can be assigned again",
            f"{self.invites} invite link(s) used by the rater deleted",
        ]


def rater_data_delete(
    *, rater: AbstractBaseUser, keep_judgments: bool = False, dry_run: bool = False
) -> RaterDataDeletion:
    """Delete a rater's personal data: the account, their enrolments (consent time,
    Prolific ids) and the invite links they used.

    By default their assignments, judgments and criterion ratings go too, which frees
    those pairs for other raters (overlap refills). With `keep_judgments` the judged
    assignments and the enrolments (Prolific ids and profile answers blanked; consent time
    and attention-check state kept) move
    to a new inactive account ``deleted-<hex>`` with no password, so the study's numbers
    do not change; unanswered assignments are deleted. All or nothing; `dry_run` counts,
    then rolls back. Staff accounts are refused (`ValueError`): delete those in the admin."""
    if rater.is_staff or rater.is_superuser:
        raise ValueError(f"{rater.get_username()} is a staff account, not a rater")
    with transaction.atomic():
        assignments = Assignment.objects.filter(rater=rater)
        enrolments = Enrolment.objects.filter(rater=rater)
        judgments = Judgment.objects.filter(assignment__rater=rater).count()
        n_enrolments = enrolments.count()
        prolific_ids = enrolments.exclude(
            prolific_pid="", prolific_study_id="", prolific_session_id=""
        ).count()
        invites, _ = Invite.objects.filter(rater=rater).delete()
        pseudonym = ""
        if keep_judgments:
            stand_in = get_user_model().objects.create_user(
                f"deleted-{secrets.token_hex(8)}", is_active=False
            )
            stand_in.studies.add(*rater.studies.all())
            assignments.filter(judgment__isnull=False).update(rater=stand_in)
            enrolments.update(
                rater=stand_in, prolific_pid="", prolific_study_id="", prolific_session_id="",
                profile={},
            )
            pseudonym = stand_in.get_username()
        assignments_deleted = assignments.count()
        # Cascades to the judgments and criterion ratings that were not moved.
        assignments.delete()
        enrolments.delete()
        summary = RaterDataDeletion(
            username=rater.get_username(),
            judgments=judgments,
            assignments_deleted=assignments_deleted,
            enrolments=n_enrolments,
            prolific_ids=prolific_ids,
            invites=invites,
            pseudonym=pseudonym,
        )
        # A queryset delete leaves the caller's object intact (a dry run rolls back).
        type(rater).objects.filter(pk=rater.pk).delete()
        if dry_run:
            transaction.set_rollback(True)
    return summary
