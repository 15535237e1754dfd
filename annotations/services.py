"""Writes of pairs, assignments and judgments. Views and commands call these.

Generation writes (leases, Pass@1 checks, the problem library) live in pipeline.py."""

from __future__ import annotations

import logging
import random
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from annotations.highlight import pairs_warm
from annotations.models import (
    RATIONALE_MAX_CHARS,
    Assignment,
    Condition,
    Criterion,
    CriterionRating,
    Enrolment,
    Generation,
    GoldAnswer,
    Invite,
    Item,
    Judgment,
    Pair,
    Problem,
    Study,
)
from annotations.selectors import (
    PAIR_TAKEN_SQL,
    RaterProgress,
    enrolments_in,
    pair_taken,
    pairs_open_to,
    rater_history,
    rater_progress,
    study_progress,
)

log = logging.getLogger(__name__)


def pairs_create(*, item: Item) -> int:
    """Pair up the item's finished generations as the study's pair design says.

    `all_pairs`: every condition pair; `vs_first`: each condition against the first one
    in study order (the dense baseline). `generation_a` is the one whose condition comes
    first in study order. Idempotent: existing pairs are kept. Returns how many were created."""
    done = list(
        item.generations.filter(status=Generation.Status.DONE, sample_index=0)
        .select_related("condition")
        .order_by("condition__position", "condition_id")
    )
    if item.study.pair_design == Study.PairDesign.VS_FIRST:
        first = item.study.conditions.order_by("position", "id").first()
        baseline = [g for g in done if first is not None and g.condition_id == first.id]
        combos = [(baseline[0], b) for b in done if baseline and b is not baseline[0]]
    else:
        combos = [(a, b) for i, a in enumerate(done) for b in done[i + 1 :]]
    rows = [
        Pair(study_id=item.study_id, item=item, generation_a=a, generation_b=b) for a, b in combos
    ]
    before = Pair.objects.filter(item=item).count()
    Pair.objects.bulk_create(rows, ignore_conflicts=True)
    # Raters will be shown these pairs: highlight them now, not on a rater's clock.
    pairs_warm((a.text, b.text) for a, b in combos)
    return Pair.objects.filter(item=item).count() - before


def _pair_needs_judgment(pair: Pair, *, now, excluding: Assignment | None = None) -> bool:
    """Whether the pair still has room for one more rater (gold pairs always do)."""
    if _one_to_one(pair, "gold") is not None:
        return True
    taken = pair_taken(pair.id, now=now, excluding_id=excluding.id if excluding else None)
    return taken < pair.study.overlap


_PAIR_TABLE = Pair._meta.db_table
_LOCK_SQL = f"SELECT 1 FROM {_PAIR_TABLE} WHERE id = %s FOR UPDATE"
# SQLite has no row locks: a write that changes nothing takes the database's write lock.
_LOCK_SQLITE_SQL = f"UPDATE {_PAIR_TABLE} SET study_id = study_id WHERE id = %s"


def _lock_pair(pair_id: int, *, wait: bool = False) -> bool:
    """Take the pair's row lock for this transaction; False if another rater holds it
    (with `wait`, wait for that rater's transaction to end instead).

    Postgres: `SELECT … FOR UPDATE SKIP LOCKED`, so concurrent raters move on to other
    pairs instead of queueing. SQLite has no row locks: a no-op write takes the database's
    write lock, which serializes the count-then-insert below just the same. The count
    must be in a statement after this one: in the same statement it would read a snapshot
    taken before the lock was granted. SQL written out: it runs on every new pair
    (docs/benchmarks.md)."""
    with connection.cursor() as cursor:
        if connection.features.has_select_for_update_skip_locked:
            cursor.execute(_LOCK_SQL if wait else _LOCK_SQL + " SKIP LOCKED", [pair_id])
            return cursor.fetchone() is not None
        cursor.execute(_LOCK_SQLITE_SQL, [pair_id])
        return cursor.rowcount == 1


# A lease, inserted only while the pair has room below the bound (the count in the same
# statement as the insert, after `_lock_pair`, so it reads what was committed before the
# lock was granted); gold pairs pass no bound. Parameters: pair, rater, a_on_left,
# created_at, lease_until, then `selectors.PAIR_TAKEN_SQL`'s (pair, 0, now), the bound.
_LEASE_SQL = f"""
INSERT INTO {Assignment._meta.db_table} (pair_id, rater_id, a_on_left, created_at, lease_until)
SELECT %s, %s, %s, %s, %s
WHERE CAST(%s AS INTEGER) IS NULL OR ({PAIR_TAKEN_SQL}) < %s
RETURNING id
"""


def _lease_insert(
    *, pair_id: int, rater: AbstractBaseUser, a_on_left: bool, now, lease_until,
    bound: int | None,
) -> Assignment | None:
    """Insert the rater's lease on the pair if fewer than `bound` places are taken
    (`None`: no bound); the new row, or None. Call with the pair locked."""
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(_LEASE_SQL, [pair_id, rater.pk, a_on_left, adapt(now),
                                    adapt(lease_until), bound, pair_id, 0, adapt(now), bound])
        row = cursor.fetchone()
    if row is None:
        return None
    made = Assignment(id=row[0], pair_id=pair_id, rater=rater, a_on_left=a_on_left,
                      created_at=now, lease_until=lease_until)
    made._state.adding, made._state.db = False, connection.alias
    return made


def assignment_next(
    *, study: Study, rater: AbstractBaseUser, rng: random.Random | None = None
) -> Assignment | None:
    """The rater's open assignment in this study, or a new one, or None when done
    (`assignment_next_counted` without the progress)."""
    return assignment_next_counted(study=study, rater=rater, rng=rng)[0]


def assignment_next_counted(
    *, study: Study, rater: AbstractBaseUser, rng: random.Random | None = None
) -> tuple[Assignment | None, RaterProgress]:
    """The rater's open assignment in this study, or a new one, or None when done; and
    the rater's progress after it, counted on the way (the rate page shows both).

    - An open assignment is resumed (its lease renewed) while its pair still needs it;
      an expired one whose pair got its judgments from others is released.
    - New work: with probability `study.gold_rate` an unseen gold pair; otherwise the pair
      with the fewest live raters (judged or leased) below `study.overlap`, ties broken by
      the condition pair this rater has seen least (balance), then at random.
    - Never a pair this rater has had; never more than `study.items_per_rater` ordinary pairs.
    - The side is randomized and stored. Safe under concurrent raters (see `_lock_pair`).

    A new assignment is returned bare (related rows read when asked for; the rate page
    reads what it shows with `selectors.pair_shown`)."""
    rng = rng or random.SystemRandom()
    now = timezone.now()
    history = rater_history(study, rater)
    made, available, gold = None, None, False
    if history.open_ids:
        resumed = Assignment.objects.select_related("pair").get(id=history.open_ids[0])
        resumed.pair.study = study
        expired = resumed.lease_until is not None and resumed.lease_until <= now
        if not expired or _pair_needs_judgment(resumed.pair, now=now, excluding=resumed):
            resumed.lease_until = now + timedelta(minutes=study.lease_minutes)
            Assignment.objects.filter(id=resumed.id).update(lease_until=resumed.lease_until)
            return resumed, rater_progress(study, rater, history=history)
        Assignment.objects.filter(id=resumed.id).update(released_at=now)
        history = history.with_released(resumed.id)

    gold_ids = list(
        GoldAnswer.objects.filter(pair__study=study)
        .exclude(pair__assignments__rater=rater)
        .values_list("pair_id", flat=True)
    ) if study.gold_rate > 0 else []
    if gold_ids and rng.random() < study.gold_rate:
        rng.shuffle(gold_ids)
        made = _assignment_first(gold_ids, study=study, rater=rater, rng=rng, now=now,
                                 gold=True)
        gold = made is not None

    if made is None and (
        study.items_per_rater is None or history.ordinary_kept < study.items_per_rater
    ):
        candidates = pairs_open_to(study, rater, now=now)
        seen = history.seen_by_conditions()
        rng.shuffle(candidates)
        candidates.sort(key=lambda row: (row.n_raters, seen[row.conditions]))
        ids = [row.pair_id for row in candidates]
        made = _assignment_first(ids, study=study, rater=rater, rng=rng, now=now)
        if made is not None or not ids:
            available = max(len(ids) - 1, 0)  # the others, unless the tries changed them
        else:
            # Every candidate was locked (other raters being given it at this instant) or
            # filled meanwhile. A locked one may still have room: wait for those locks
            # rather than tell this rater that the study is done (the load benchmark
            # caught that at a study's end).
            made = _assignment_first(ids, study=study, rater=rater, rng=rng, now=now,
                                     wait=True)
    elif made is None:
        available = 0  # the rater has had as many ordinary pairs as the study allows

    if made is not None:
        history = history.with_new(made.id, gold=gold)
    return made, rater_progress(study, rater, history=history, available=available)


def _assignment_first(
    pair_ids: list[int], *, study: Study, rater: AbstractBaseUser, rng: random.Random, now,
    gold: bool = False, wait: bool = False,
) -> Assignment | None:
    """The first of the pairs that can be leased to the rater, leased; None if none can."""
    for pair_id in pair_ids:
        made = _assignment_try(pair_id=pair_id, study=study, rater=rater, rng=rng, now=now,
                               gold=gold, wait=wait)
        if made is not None:
            return made
    return None


def _assignment_try(
    *, pair_id: int, study: Study, rater: AbstractBaseUser, rng: random.Random, now,
    gold: bool = False, wait: bool = False,
) -> Assignment | None:
    """Lease the pair to the rater if it is free and still needs a judgment; else None.

    `gold`: a gold pair, which always has room. `wait`: wait for another rater's lock on
    the pair instead of skipping it. Returns the bare row (no related objects read)."""
    try:
        with transaction.atomic():
            if not _lock_pair(pair_id, wait=wait):
                return None  # another rater is being given this pair right now
            return _lease_insert(
                pair_id=pair_id,
                rater=rater,
                a_on_left=rng.random() < 0.5,
                now=now,
                lease_until=now + timedelta(minutes=study.lease_minutes),
                bound=None if gold else study.overlap,
            )
    except IntegrityError:
        # A second tab of the same rater took this pair a moment ago.
        return None


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


def judgment_submit(
    *,
    assignment: Assignment,
    choice: str,
    time_on_task_ms: int | None = None,
    rationale: str = "",
    ratings: dict[int, tuple[int, int]] | None = None,
    enrolment: Enrolment | None = None,
    criteria: list[Criterion] | None = None,
) -> tuple[Judgment, bool]:
    """Record the rater's choice for an assignment, once.

    `enrolment` and `criteria` (the rater's enrolment in the pair's study and the study's
    criteria) may be passed by a caller that has just read them, to save the reads.

    `ratings` maps criterion id -> (left value, right value) as shown on screen; they are
    stored in condition order (a, b). Returns (judgment, created). A repeated submit
    (double click, two tabs, replay) returns the first judgment unchanged, created=False.

    Refused with `JudgmentRejected` (nothing stored) when:
    - the answer came faster than the study's `min_response_ms` (server clock: time since
      the pair was handed out, so a forged client timer cannot bypass it);
    - the lease expired and the pair meanwhile got all its judgments from other raters.
      A late submit on an expired lease is *accepted* whenever the pair still needs a
      judgment — work done late is still good work;
    - the rater was blocked by attention checks.
    A wrong answer on a gold pair is stored (gold_correct=False) and counts towards the
    study's `gold_block_after`."""
    if choice not in Judgment.Choice.values:
        raise ValueError(f"unknown choice {choice!r}; expected one of {Judgment.Choice.values}")
    if len(rationale) > RATIONALE_MAX_CHARS:
        raise ValueError(f"rationale longer than {RATIONALE_MAX_CHARS} characters")
    existing = _one_to_one(assignment, "judgment")
    if existing is not None:
        return existing, False
    study = assignment.pair.study
    now = timezone.now()
    if enrolment is None:
        enrolment = Enrolment.objects.filter(study=study, rater_id=assignment.rater_id).first()
    if enrolment is not None and enrolment.blocked_at is not None:
        raise JudgmentRejected("Your session in this study has ended.")
    elapsed_ms = (now - assignment.created_at).total_seconds() * 1000
    if study.min_response_ms and elapsed_ms < study.min_response_ms:
        raise JudgmentRejected(
            "That was very quick — please read the prompt and both responses before choosing."
        )
    by_id = {c.id: c for c in (study.criteria.all() if criteria is None else criteria)}
    ratings = ratings or {}
    for criterion_id, values in ratings.items():
        criterion = by_id.get(criterion_id)
        if criterion is None or not all(1 <= v <= criterion.scale_points for v in values):
            raise ValueError(f"bad rating {values!r} for criterion {criterion_id}")
    winner = _WINNER_BY_SIDE[(choice, assignment.a_on_left)]
    gold = _one_to_one(assignment.pair, "gold")
    try:
        with transaction.atomic():
            expired = assignment.lease_until is not None and assignment.lease_until <= now
            if expired and not _lock_and_check(assignment, now=now):
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


def _judgment_create(
    *,
    assignment: Assignment,
    choice: str,
    winner: str,
    rationale: str,
    time_on_task_ms: int | None,
    gold: GoldAnswer | None,
    ratings: dict[int, tuple[int, int]],
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
    CriterionRating.objects.bulk_create(
        CriterionRating(
            judgment=judgment,
            criterion_id=criterion_id,
            value_a=left if assignment.a_on_left else right,
            value_b=right if assignment.a_on_left else left,
        )
        for criterion_id, (left, right) in ratings.items()
    )
    Assignment.objects.filter(id=assignment.id).update(completed_at=now)
    if gold is not None and not judgment.gold_correct:
        _gold_failure_record(study=study, rater_id=assignment.rater_id, now=now)
    return judgment


def _lock_and_check(assignment: Assignment, *, now) -> bool:
    """Within a transaction: does the assignment's pair still need this judgment?"""
    _lock_pair(assignment.pair_id, wait=True)
    return _pair_needs_judgment(assignment.pair, now=now, excluding=assignment)


def _one_to_one(instance, name: str):
    """The object on the other side of a one-to-one relation, or None: read with
    `instance` when its query selected it (`select_related`), else read now."""
    try:
        return getattr(instance, name)
    except ObjectDoesNotExist:
        return None


def _gold_failure_record(*, study: Study, rater_id: int, now) -> None:
    enrolment, _ = Enrolment.objects.get_or_create(study=study, rater_id=rater_id)
    Enrolment.objects.filter(id=enrolment.id).update(gold_failures=F("gold_failures") + 1)
    enrolment.refresh_from_db()
    if study.gold_block_after and enrolment.gold_failures >= study.gold_block_after:
        Enrolment.objects.filter(id=enrolment.id, blocked_at__isnull=True).update(blocked_at=now)


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


def enrolment_complete(*, enrolment: Enrolment) -> None:
    Enrolment.objects.filter(id=enrolment.id, completed_at__isnull=True).update(
        completed_at=timezone.now()
    )
    enrolment.refresh_from_db()


# \Z, not $: "$" also matches before a trailing newline ("abc\n" would pass).
_PROLIFIC_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")


def prolific_rater_get(
    *, study: Study, prolific_pid: str, prolific_study_id: str = "", session_id: str = ""
) -> AbstractBaseUser:
    """The rater account tied to a Prolific participant id, created on first entry.

    The PID is stored on the enrolment exactly as given (after validation); the account
    has no usable password, so it can only be entered through the study link."""
    for value in (prolific_pid, prolific_study_id, session_id):
        if value and not _PROLIFIC_ID.match(value):
            raise ValueError("Prolific ids may only hold letters, digits, '-' and '_'.")
    if not prolific_pid:
        raise ValueError("The link lacks PROLIFIC_PID.")
    User = get_user_model()
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=f"prolific-{prolific_pid}")
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


def study_create(
    *,
    fields: dict,
    conditions: list[tuple[str, dict]],
    criteria: list[tuple[str, str]],
    dataset: str = "",
    task_contains: str = "",
    prompt_contains: str = "",
    item_count: int = 0,
    seed: int = 0,
    prompts: list[str] | None = None,
) -> Study:
    """A draft study with its conditions (in the given order), criteria and items.

    Items: `item_count` problems of `dataset` matching the filters, drawn with `seed`
    (the same seed draws the same problems), plus any free-text `prompts`."""
    with transaction.atomic():
        study = Study.objects.create(status=Study.Status.DRAFT, **fields)
        Condition.objects.bulk_create(
            Condition(study=study, name=name, policy=policy, position=position)
            for position, (name, policy) in enumerate(conditions)
        )
        Criterion.objects.bulk_create(
            Criterion(study=study, name=name, question=question, position=position)
            for position, (name, question) in enumerate(criteria)
        )
        items = []
        if dataset:
            problems = Problem.objects.filter(dataset=dataset, unavailable_reason="")
            if task_contains:
                problems = problems.filter(task_id__icontains=task_contains)
            if prompt_contains:
                problems = problems.filter(prompt__icontains=prompt_contains)
            ids = sorted(problems.values_list("id", flat=True))
            chosen = random.Random(seed).sample(ids, min(item_count, len(ids)))
            items += [
                Item(study=study, problem=p, dataset=p.dataset, task_id=p.task_id, prompt=p.prompt)
                for p in Problem.objects.filter(id__in=chosen).order_by("id")
            ]
        items += [
            Item(study=study, dataset="custom", task_id=f"custom/{i}", prompt=prompt)
            for i, prompt in enumerate(prompts or [])
        ]
        Item.objects.bulk_create(items)
    return study


def study_launch(*, study: Study) -> list[str]:
    """Open the study for rating, or return why not (and change nothing).

    Refuses while generations are missing, waiting, running or awaiting their Pass@1
    check, when there are no pairs, or when gold items are asked for but none exist."""
    if study.status == Study.Status.CLOSED:
        return ["The study is closed."]
    reasons = []
    if study.conditions.count() < 2:
        reasons.append("It needs at least two conditions.")
    if not study.items.exists():
        reasons.append("It has no items.")
    progress = study_progress(study)
    if progress.total == 0:
        reasons.append("Generations have not been started (use Generate on the study page).")
    elif not progress.finished:
        waiting = progress.total - progress.done - progress.failed - progress.cancelled
        reasons.append(
            f"Generations are not complete: {progress.done} of {progress.total} done, "
            f"{waiting} still waiting or running"
            + (f", {progress.checks_pending} Pass@1 checks pending." if progress.checks_pending
               else ".")
        )
    if progress.total and not study.pairs.exists():
        reasons.append("No pairs could be formed from the finished generations.")
    if study.gold_rate > 0 and not GoldAnswer.objects.filter(pair__study=study).exists():
        reasons.append("A gold rate is set but no pair is marked as gold (admin: Gold answers).")
    if reasons:
        return reasons
    Study.objects.filter(id=study.id).update(status=Study.Status.OPEN)
    study.status = Study.Status.OPEN
    return []


def study_status_set(*, study: Study, status: str) -> bool:
    """Pause an open study, or close a study for good. Returns whether it changed."""
    allowed = {
        Study.Status.PAUSED: [Study.Status.OPEN],
        Study.Status.CLOSED: [Study.Status.DRAFT, Study.Status.OPEN, Study.Status.PAUSED],
    }
    if status not in allowed:
        raise ValueError(f"cannot set status {status!r} here")
    changed = Study.objects.filter(id=study.id, status__in=allowed[status]).update(status=status)
    if changed:
        study.status = status
    return bool(changed)


# --- Rater data: deletion on request ---------------------------------------------------


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
