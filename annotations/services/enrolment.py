"""Enrolment and recruitment: a rater's place in a study, consent, completion, and the
two ways in (Prolific links and invite links)."""

from __future__ import annotations

import enum
import re
import secrets
from collections.abc import Callable

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from annotations.models import Enrolment, Invite, Study
from annotations.selectors import enrolments_in, rater_history, rater_may_get_more


def enrolment_get(*, study: Study, rater: AbstractBaseUser) -> Enrolment:
    """The rater's enrolment in the study, created (and added to study.raters) on first use.
    One read once both exist (the rate page and every submit ask)."""
    enrolment = enrolments_in(study.id, rater).first()
    if enrolment is not None:
        return enrolment
    study.raters.add(rater)
    enrolment, _ = Enrolment.objects.get_or_create(study=study, rater=rater)
    return enrolment


def enrolment_consent(*, enrolment: Enrolment, profile: dict[str, str] | None = None) -> None:
    """Record consent once, with the rater's answers to the study's profile questions
    (``{name: choice}``, validated by the consent form); the first consent stays."""
    Enrolment.objects.filter(id=enrolment.id, consented_at__isnull=True).update(
        consented_at=timezone.now(), profile=profile or {}
    )
    enrolment.refresh_from_db()


class OutOfPairs(enum.Enum):
    """Where a rater stands when no pair is free for them."""

    WAITING = "waiting"  # pairs may still come (leases run out, outputs still generating)
    COMPLETE = "complete"  # nothing more for them, and enough judged: the completion code
    SHORT = "short"  # nothing more for them, but fewer judged than the study's minimum


def enrolment_out_of_pairs(
    *, study: Study, enrolment: Enrolment, rater: AbstractBaseUser
) -> OutOfPairs:
    """Decide, for a rater who was just given no pair, whether to wait, complete or stop
    short; records the completion (once) when they have judged the study's
    `min_judgments` ordinary pairs. The completion code is a rater's proof of work on a
    crowd platform: never for a rater who merely found every pair leased to others."""
    history = rater_history(study, rater)
    if rater_may_get_more(study, rater, history=history):
        return OutOfPairs.WAITING
    if history.ordinary_judged < study.min_judgments:
        return OutOfPairs.SHORT
    enrolment_complete(enrolment=enrolment)
    return OutOfPairs.COMPLETE


def enrolment_complete(*, enrolment: Enrolment) -> None:
    Enrolment.objects.filter(id=enrolment.id, completed_at__isnull=True).update(
        completed_at=timezone.now()
    )
    enrolment.refresh_from_db()


# \Z, not $: "$" also matches before a trailing newline ("abc\n" would pass).
_PROLIFIC_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


class EntryThrottled(ValueError):
    """The study's public link made as many new accounts as it may for now."""


ENTRY_THROTTLED = (
    "Too many new participants are joining from here right now. Please try again in a few "
    "minutes."
)


def prolific_rater_get(
    *, study: Study, prolific_pid: str, prolific_study_id: str = "", session_id: str = "",
    may_create: Callable[[], bool] = lambda: True,
) -> AbstractBaseUser:
    """The rater account tied to a Prolific participant id, created on first entry if
    `may_create()` allows (asked only then; `EntryThrottled` if not: the view passes the
    per-address and per-study limit, `annotations.throttle.entry_account_allowed`).

    The PID is stored on the enrolment exactly as given (after validation); the account
    has no usable password, so it can only be entered through the study link."""
    for value in (prolific_pid, prolific_study_id, session_id):
        if value and not _PROLIFIC_ID.match(value):
            raise ValueError("Prolific ids may only hold letters, digits, '-' and '_'.")
    if not prolific_pid:
        raise ValueError("The link lacks PROLIFIC_PID.")
    User = get_user_model()
    username = f"prolific-{prolific_pid}"
    if not User.objects.filter(username=username).exists() and not may_create():
        raise EntryThrottled(ENTRY_THROTTLED)
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username)
        if not created and (user.is_staff or user.has_usable_password()):
            # Not an account this link made: the link must never log in as someone else.
            raise ValueError("This link cannot be used; please contact the researchers.")
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        enrolment = enrolment_get(study=study, rater=user)
        Enrolment.objects.filter(id=enrolment.id).update(
            prolific_pid=prolific_pid,
            prolific_study_id=prolific_study_id,
            prolific_session_id=session_id,
        )
    return user


def invite_create(*, study: Study) -> Invite:
    return Invite.objects.create(study=study, token=secrets.token_urlsafe(24))


def invite_redeem(*, invite: Invite) -> AbstractBaseUser:
    """The rater of an invite link: a new account on first use, the same one afterwards."""
    with transaction.atomic():
        invite = Invite.objects.select_for_update().get(id=invite.id)
        if invite.rater is None:
            User = get_user_model()
            user = User.objects.create_user(f"rater-{secrets.token_hex(4)}-{invite.id}")
            user.set_unusable_password()
            user.save(update_fields=["password"])
            invite.rater = user
            invite.used_at = timezone.now()
            invite.save(update_fields=["rater", "used_at"])
        enrolment_get(study=invite.study, rater=invite.rater)
        return invite.rater


