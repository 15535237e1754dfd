"""A rater's verdict on an assignment: checked, stored once, attention checks counted."""

from __future__ import annotations

from enum import Enum

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from annotations.models import (
    RATIONALE_MAX_CHARS,
    Assignment,
    Criterion,
    CriterionRating,
    Enrolment,
    GoldAnswer,
    Judgment,
    Study,
)
from annotations.services.pairs_assignments import pair_has_room, pair_lock

_WINNER_BY_SIDE = {
    # (choice, a_on_left) -> winner in condition order
    ("left", True): Judgment.Winner.A,
    ("left", False): Judgment.Winner.B,
    ("right", True): Judgment.Winner.B,
    ("right", False): Judgment.Winner.A,
    ("tie", True): Judgment.Winner.TIE,
    ("tie", False): Judgment.Winner.TIE,
    # Both bad counts as a tie in the analysis; Judgment.both_bad tells them apart.
    ("both_bad", True): Judgment.Winner.TIE,
    ("both_bad", False): Judgment.Winner.TIE,
}


class JudgmentRejected(Exception):
    """The submit was refused; the message is meant for the rater."""


class Refusal(Enum):
    """Why a rater may not judge now; the value is what the rater reads."""

    NOT_STARTED = "This study has not started yet; your choice was not recorded."
    STOPPED = "This study is paused or closed; your choice was not recorded."
    NO_CONSENT = "Please accept the consent form first."
    BLOCKED = "Your session in this study has ended."
    JUDGED = "You had already answered that pair; your first answer stands."


def judging_refusal(
    *, study: Study, enrolment: Enrolment | None, assignment: Assignment | None = None
) -> Refusal | None:
    """The one statement of who may judge: the first reason the rater with `enrolment`
    (None: not enrolled yet) may not judge in `study` now (the study not open, the consent
    it asks for not given, blocked by attention checks) or, given `assignment`, that it is
    judged already; None when they may. The rate page and `judgment_submit` both ask it.
    Reads nothing beyond what is passed (`assignment`'s judgment, if not selected with it)."""
    if study.status == Study.Status.DRAFT:
        return Refusal.NOT_STARTED
    if not study.is_open():
        return Refusal.STOPPED
    if study.consent_text and (enrolment is None or enrolment.consented_at is None):
        return Refusal.NO_CONSENT
    if enrolment is not None and enrolment.is_blocked:
        return Refusal.BLOCKED
    if assignment is not None and assignment.judgment_or_none() is not None:
        return Refusal.JUDGED
    return None


def judgment_submit(
    *,
    assignment: Assignment,
    choice: str,
    time_on_task_ms: int | None = None,
    rationale: str = "",
    ratings: dict[int, tuple[int | str | None, int | str | None]] | None = None,
    enrolment: Enrolment | None = None,
    criteria: list[Criterion] | None = None,
) -> tuple[Judgment, bool]:
    """Record the rater's choice for an assignment, once.

    `enrolment` and `criteria` (the rater's enrolment in the pair's study and the study's
    criteria) may be passed by a caller that has just read them, to save the reads.

    `ratings` maps criterion id -> (left value, right value) as shown on screen, each a
    value, `CriterionRating.CANT_JUDGE` (where the criterion offers it) or None (left blank,
    where it is optional); they are stored in condition order (a, b). Returns (judgment,
    created). A repeated submit (double click, two tabs, replay) returns the first judgment
    unchanged, created=False.

    Refused with `JudgmentRejected` (nothing stored) when `judging_refusal` says so (the
    study not open, consent not given, the rater blocked), or when:
    - the answer came faster than the study's `min_response_ms` (server clock: time since
      the pair was handed out, so a forged client timer cannot bypass it);
    - the lease expired and the pair meanwhile got all its judgments from other raters.
      A late submit on an expired lease is *accepted* whenever the pair still needs a
      judgment — work done late is still good work.
    A wrong answer on a gold pair is stored (gold_correct=False) and counts towards the
    study's `gold_block_after`."""
    if choice not in Judgment.Choice.values:
        raise ValueError(f"unknown choice {choice!r}; expected one of {Judgment.Choice.values}")
    if len(rationale) > RATIONALE_MAX_CHARS:
        raise ValueError(f"rationale longer than {RATIONALE_MAX_CHARS} characters")
    study = assignment.pair.study
    now = timezone.now()
    if enrolment is None:
        enrolment = Enrolment.objects.filter(study=study, rater_id=assignment.rater_id).first()
    refusal = judging_refusal(study=study, enrolment=enrolment, assignment=assignment)
    if refusal is Refusal.JUDGED:
        return assignment.judgment, False
    if refusal is not None:
        raise JudgmentRejected(refusal.value)
    elapsed_ms = (now - assignment.created_at).total_seconds() * 1000
    if study.min_response_ms and elapsed_ms < study.min_response_ms:
        raise JudgmentRejected(
            "That was very quick — please read the prompt and both responses before choosing."
        )
    by_id = {c.id: c for c in (study.criteria.all() if criteria is None else criteria)}
    ratings = ratings or {}
    for criterion_id, values in ratings.items():
        criterion = by_id.get(criterion_id)
        if criterion is None or not all(_rating_ok(criterion, v) for v in values):
            raise ValueError(f"bad rating {values!r} for criterion {criterion_id}")
    winner = _WINNER_BY_SIDE[(choice, assignment.a_on_left)]
    gold = assignment.pair.gold_or_none()
    try:
        with transaction.atomic():
            if assignment.lease_expired(now) and not _lock_and_check(assignment, now=now):
                Assignment.objects.filter(id=assignment.id).update(released_at=now)
                judgment = None
            else:
                judgment = _judgment_create(
                    assignment=assignment,
                    choice=choice,
                    winner=winner,
                    rationale=rationale,
                    time_on_task_ms=time_on_task_ms,
                    gold=gold,
                    ratings=ratings,
                    now=now,
                )
    except IntegrityError:
        return Judgment.objects.get(assignment=assignment), False
    if judgment is None:
        raise JudgmentRejected(
            "Your time for this pair ran out and it was given to someone else; "
            "this answer was not recorded. Here is your next pair."
        )
    return judgment, True


def _rating_ok(criterion: Criterion, value: int | str | None) -> bool:
    """A value on the criterion's scale, "can't judge" where it is offered, or nothing
    where the criterion is optional."""
    if value is None:
        return not criterion.required
    if value == CriterionRating.CANT_JUDGE:
        return criterion.cant_judge
    return isinstance(value, int) and 1 <= value <= criterion.scale_points


def _rating(
    *, judgment: Judgment, criterion_id: int, a: int | str | None, b: int | str | None
) -> CriterionRating | None:
    """The stored row of one criterion's answers in condition order; None if both blank."""
    if a is None and b is None:
        return None
    cant = CriterionRating.CANT_JUDGE
    return CriterionRating(
        judgment=judgment, criterion_id=criterion_id,
        value_a=None if a == cant else a, value_b=None if b == cant else b,
        cant_judge_a=a == cant, cant_judge_b=b == cant,
    )


def _judgment_create(
    *,
    assignment: Assignment,
    choice: str,
    winner: str,
    rationale: str,
    time_on_task_ms: int | None,
    gold: GoldAnswer | None,
    ratings: dict[int, tuple[int | str | None, int | str | None]],
    now,
) -> Judgment:
    study = assignment.pair.study
    judgment = Judgment.objects.create(
        assignment=assignment,
        choice=choice,
        winner=winner,
        both_bad=choice == Judgment.Choice.BOTH_BAD,
        rationale=rationale.strip(),
        time_on_task_ms=time_on_task_ms,
        gold_correct=None if gold is None else gold.winner == winner,
    )
    rows = (
        _rating(judgment=judgment, criterion_id=criterion_id,
                a=left if assignment.a_on_left else right,
                b=right if assignment.a_on_left else left)
        for criterion_id, (left, right) in ratings.items()
    )
    CriterionRating.objects.bulk_create(row for row in rows if row is not None)
    Assignment.objects.filter(id=assignment.id).update(completed_at=now)
    if gold is not None and not judgment.gold_correct:
        _gold_failure_record(study=study, rater_id=assignment.rater_id, now=now)
    return judgment


def _lock_and_check(assignment: Assignment, *, now) -> bool:
    """Within a transaction: does the assignment's pair still need this judgment?"""
    pair_lock(assignment.pair_id, wait=True)
    return pair_has_room(assignment.pair, now=now, excluding=assignment)


def _gold_failure_record(*, study: Study, rater_id: int, now) -> None:
    enrolment, _ = Enrolment.objects.get_or_create(study=study, rater_id=rater_id)
    Enrolment.objects.filter(id=enrolment.id).update(gold_failures=F("gold_failures") + 1)
    enrolment.refresh_from_db()
    if study.blocks_after(enrolment.gold_failures):
        Enrolment.objects.filter(id=enrolment.id, blocked_at__isnull=True).update(blocked_at=now)
