"""Reads of the rater's pages, on every request: which pairs are open to a rater, what
they hold, their progress, and what the rate page shows of a pair. Several are SQL written
out for speed (docs/benchmarks.md); staff reads are in `selectors.staff`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import NamedTuple

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from annotations.models import (
    Assignment,
    Calibration,
    Enrolment,
    Generation,
    GoldAnswer,
    Item,
    Judgment,
    Pair,
    Study,
)


@dataclass(frozen=True)
class RaterProgress:
    judged: int
    remaining: int

    @property
    def percent(self) -> int:
        total = self.judged + self.remaining
        return round(100 * self.judged / total) if total else 100


class OpenPair(NamedTuple):
    """A pair a rater could be given: its id, its live raters, its (a, b) condition ids."""

    pair_id: int
    n_raters: int
    conditions: tuple[int, int]


# Live assignments, which hold a place in a pair's overlap: `AssignmentQuerySet.live` (the
# rule's one statement) in SQL, written out for the rate page's speed. Judged is read
# as `completed_at` set (`services.judgment_submit` sets both in one transaction), which
# spares every such read a join to the judgments. Over assignments aliased `a`; the
# parameter is now. Used by `pairs_open_to` and `pair_taken`
# (tests/annotations/test_services_pairs_assignments.py holds the SQL to the model's rule in
# every state an assignment can be in).
_LIVE_SQL = ("(a.completed_at IS NOT NULL OR (a.released_at IS NULL"
             " AND (a.lease_until IS NULL OR a.lease_until > %s)))")


# The places taken in one pair; parameters: the pair, an assignment left out (0: none), now.
# `services.pairs_assignments` leases in a statement built on it.
PAIR_TAKEN_SQL = (f"SELECT COUNT(*) FROM {Assignment._meta.db_table} a"
                  f" WHERE a.pair_id = %s AND a.id <> %s AND {_LIVE_SQL}")


def pair_taken(pair_id: int, *, now, excluding_id: int | None = None) -> int:
    """How many raters hold a place in the pair's overlap (live assignments), leaving out
    the assignment `excluding_id`."""
    with connection.cursor() as cursor:
        cursor.execute(PAIR_TAKEN_SQL, [pair_id, excluding_id or 0,
                                        connection.ops.adapt_datetimefield_value(now)])
        return cursor.fetchone()[0]


# Written out, not built by the ORM: the ORM's form joins every assignment to every pair
# and groups after, so the two generation joins and the "not had" check run once per
# assignment, not per pair; counting the live assignments per pair first halves the
# statement (2.8 -> 1.1 ms at 250 pairs) and it needs no query compiling on every page
# (docs/benchmarks.md). Plain SQL that PostgreSQL and SQLite both run.
_PAIRS_OPEN_TO_SQL = f"""
SELECT p.id, COALESCE(taken.n, 0), ga.condition_id, gb.condition_id
FROM {Pair._meta.db_table} p
JOIN {Generation._meta.db_table} ga ON ga.id = p.generation_a_id
JOIN {Generation._meta.db_table} gb ON gb.id = p.generation_b_id
LEFT JOIN (
    SELECT a.pair_id, COUNT(*) AS n
    FROM {Assignment._meta.db_table} a
    JOIN {Pair._meta.db_table} ap ON ap.id = a.pair_id
    WHERE ap.study_id = %s AND {_LIVE_SQL}
    GROUP BY a.pair_id
) taken ON taken.pair_id = p.id
WHERE p.study_id = %s
  AND COALESCE(taken.n, 0) < %s
  AND NOT EXISTS (SELECT 1 FROM {GoldAnswer._meta.db_table} g WHERE g.pair_id = p.id)
  AND NOT EXISTS (
      SELECT 1 FROM {Assignment._meta.db_table} mine
      WHERE mine.pair_id = p.id AND mine.rater_id = %s
  )
"""


class ConditionPairScores(NamedTuple):
    """A condition pair's judgments so far, scored 1 / ½ (tie) / 0 for its first
    condition: how many, their sum and their sum of squares."""

    n: int
    total: float
    squares: float


def condition_pair_scores(study: Study) -> dict[tuple[int, int], ConditionPairScores]:
    """Every judged condition pair's scores (gold pairs left out), keyed like
    `OpenPair.conditions`; one grouped query."""
    rows = (
        Judgment.objects.filter(assignment__pair__study=study, gold_correct=None)
        .values_list(
            "assignment__pair__generation_a__condition_id",
            "assignment__pair__generation_b__condition_id",
        )
        .annotate(
            n=Count("id"),
            wins=Count("id", filter=Q(winner=Judgment.Winner.A)),
            ties=Count("id", filter=Q(winner=Judgment.Winner.TIE)),
        )
    )
    return {
        (a, b): ConditionPairScores(n, wins + ties / 2, wins + ties / 4)
        for a, b, n, wins, ties in rows
    }


# For `newcomer_share`, in one statement: live unanswered leases on ordinary pairs held by
# raters with no answer in the study, and the judgments the study's ordinary pairs still
# need. Parameters: study, now, overlap, study, overlap.
_NEWCOMER_SHARE_SQL = f"""
SELECT
  (SELECT COUNT(*) FROM {Assignment._meta.db_table} a
   WHERE a.study_id = %s AND a.completed_at IS NULL AND a.released_at IS NULL
     AND a.lease_until > %s
     AND NOT EXISTS (SELECT 1 FROM {GoldAnswer._meta.db_table} g WHERE g.pair_id = a.pair_id)
     AND NOT EXISTS (SELECT 1 FROM {Assignment._meta.db_table} d
                     WHERE d.study_id = a.study_id AND d.rater_id = a.rater_id
                       AND d.completed_at IS NOT NULL)),
  (SELECT COALESCE(SUM(%s - judged.n), 0) FROM (
     SELECT (SELECT COUNT(*) FROM {Assignment._meta.db_table} d
             WHERE d.pair_id = p.id AND d.completed_at IS NOT NULL) AS n
     FROM {Pair._meta.db_table} p
     WHERE p.study_id = %s
       AND NOT EXISTS (SELECT 1 FROM {GoldAnswer._meta.db_table} g WHERE g.pair_id = p.id)
   ) judged WHERE judged.n < %s)
"""


def newcomer_share(study: Study, *, now) -> tuple[int, int]:
    """(newcomer leases, places open): the live, unanswered leases on ordinary pairs held by
    raters who have answered nothing in the study (a first answer makes a rater like any
    other), and the judgments the study's ordinary (not gold) pairs still need to reach its
    overlap. One read."""
    with connection.cursor() as cursor:
        cursor.execute(_NEWCOMER_SHARE_SQL, [
            study.id, connection.ops.adapt_datetimefield_value(now), study.overlap, study.id,
            study.overlap,
        ])
        leases, unfinished = cursor.fetchone()
    # PostgreSQL's SUM of integers is a numeric (a Decimal in Python), SQLite's an int.
    return int(leases), int(unfinished)


def pairs_open_to(study: Study, rater: AbstractBaseUser, *, now=None) -> list[OpenPair]:
    """Ordinary (not gold) pairs the rater has never had that still have room below the
    study's overlap, with their live assignments; unordered."""
    now = now or timezone.now()
    params = [study.id, connection.ops.adapt_datetimefield_value(now), study.id,
              study.overlap, rater.pk]
    with connection.cursor() as cursor:
        cursor.execute(_PAIRS_OPEN_TO_SQL, params)
        return [OpenPair(id_, n, (a, b)) for id_, n, a, b in cursor.fetchall()]


@dataclass(frozen=True)
class Held:
    """One of a rater's assignments, as the rate page counts it."""

    assignment_id: int
    judged: bool
    released: bool
    gold: bool
    conditions: tuple[int, int] | None  # the pair's (a, b) condition ids, when read

    @property
    def open(self) -> bool:
        return not self.judged and not self.released


@dataclass(frozen=True)
class RaterHistory:
    """Every assignment a rater has had in one study, oldest first, read in one query:
    the rate page decides from it whether work is open, which condition pairs the rater
    has seen, and the progress bar's counts."""

    held: tuple[Held, ...]

    @property
    def open_ids(self) -> list[int]:
        return [h.assignment_id for h in self.held if h.open]

    @property
    def judged(self) -> int:
        return sum(h.judged for h in self.held)

    @property
    def ordinary_judged(self) -> int:
        return sum(h.judged and not h.gold for h in self.held)

    @property
    def gold_had(self) -> int:
        """Gold pairs the rater has been given (judged, held or let go: never again)."""
        return sum(h.gold for h in self.held)

    @property
    def ordinary_kept(self) -> int:
        """Ordinary pairs judged or still held: what `Study.items_per_rater` caps."""
        return sum(not h.gold and (h.judged or not h.released) for h in self.held)

    def seen_by_conditions(self) -> Counter[tuple[int, int] | None]:
        return Counter(h.conditions for h in self.held)

    def with_released(self, assignment_id: int) -> RaterHistory:
        return RaterHistory(tuple(
            replace(h, released=True) if h.assignment_id == assignment_id else h
            for h in self.held
        ))

    def with_new(self, assignment_id: int, *, gold: bool) -> RaterHistory:
        new = Held(assignment_id, judged=False, released=False, gold=gold, conditions=None)
        return RaterHistory((*self.held, new))


# Every rater reads these two on every new pair; written out like `_PAIRS_OPEN_TO_SQL`, as
# the ORM's compiling cost as much as running them (0.7-0.8 ms each, docs/benchmarks.md).
_RATER_HISTORY_SQL = f"""
SELECT a.id, a.completed_at IS NOT NULL, a.released_at IS NOT NULL, g.id IS NOT NULL,
       ga.condition_id, gb.condition_id
FROM {Assignment._meta.db_table} a
JOIN {Pair._meta.db_table} p ON p.id = a.pair_id
JOIN {Generation._meta.db_table} ga ON ga.id = p.generation_a_id
JOIN {Generation._meta.db_table} gb ON gb.id = p.generation_b_id
LEFT JOIN {GoldAnswer._meta.db_table} g ON g.pair_id = p.id
WHERE p.study_id = %s AND a.rater_id = %s
ORDER BY a.id
"""


def rater_history(study: Study, rater: AbstractBaseUser) -> RaterHistory:
    with connection.cursor() as cursor:
        cursor.execute(_RATER_HISTORY_SQL, [study.id, rater.pk])
        rows = cursor.fetchall()
    return RaterHistory(tuple(
        Held(id_, judged=bool(judged), released=bool(released), gold=bool(gold),
             conditions=(a, b))
        for id_, judged, released, gold, a, b in rows
    ))


def rater_may_get_more(study: Study, rater: AbstractBaseUser, *, history: RaterHistory) -> bool:
    """Whether pairs may still come to a rater who has none right now: below the study's
    per-rater cap, and either generations are still running or a condition is still being
    calibrated (its generations come after: new pairs will form), or a pair the rater has
    not had has fewer judgments than the overlap (another rater's lease on it may run
    out). Read only when no pair was free."""
    if study.items_per_rater is not None and history.ordinary_kept >= study.items_per_rater:
        return False
    unfinished = [Generation.Status.PENDING, Generation.Status.RUNNING]
    if Generation.objects.filter(item__study=study, status__in=unfinished).exists():
        return True
    calibrating = [Calibration.Status.PENDING, Calibration.Status.RUNNING]
    if Calibration.objects.filter(condition__study=study, status__in=calibrating).exists():
        return True
    return (
        Pair.objects.filter(study=study, gold__isnull=True)
        .exclude(assignments__rater=rater)
        .annotate(judged=Count("assignments", filter=Q(assignments__completed_at__isnull=False)))
        .filter(judged__lt=study.overlap)
        .exists()
    )


def ordinary_to_give(study: Study, history: RaterHistory, *, available: int) -> int:
    """How many more ordinary pairs the rater is to be given, beyond any held now: those
    open to them (`available`), up to `Study.items_per_rater`."""
    if study.items_per_rater is None:
        return available
    return max(0, min(available, study.items_per_rater - history.ordinary_kept))


def gold_to_give(study: Study, history: RaterHistory, *, unseen: int, ordinary: int) -> int:
    """How many more gold pairs the rater is to be given: a share `gold_rate` of all their
    pairs (r / (1 − r) per ordinary pair, rounded; `ordinary`: ordinary pairs still to
    give), never more than the `unseen` gold pairs they have not had; rate 1: all of them.
    The rate page counts them in advance, so its total never changes under the rater."""
    if study.gold_rate <= 0 or unseen <= 0:
        return 0
    if study.gold_rate >= 1:
        return unseen
    share = study.gold_rate / (1 - study.gold_rate)
    quota = round((history.ordinary_kept + ordinary) * share)
    return max(0, min(unseen, quota - history.gold_had))


def gold_unseen(study: Study, rater: AbstractBaseUser) -> list[int]:
    """The ids of the study's gold pairs this rater has never been given (none at rate 0)."""
    if study.gold_rate <= 0:
        return []
    return list(
        GoldAnswer.objects.filter(pair__study=study)
        .exclude(pair__assignments__rater=rater)
        .values_list("pair_id", flat=True)
    )


def rater_progress(
    study: Study, rater: AbstractBaseUser, *, history: RaterHistory | None = None,
    available: int | None = None, unseen_gold: int | None = None,
) -> RaterProgress:
    """How many pairs this rater has judged and how many more they are to get: the open
    one, the ordinary pairs open to them (up to the study's cap) and the gold checks due
    with those (`gold_to_give`), so judged + to go stays the same from first pair to last
    unless other raters fill pairs meanwhile.

    `history` (`rater_history`), `available` (how many pairs are open to the rater,
    `pairs_open_to`) and `unseen_gold` (`gold_unseen`'s count) may be passed by a caller
    that has just read them."""
    history = history if history is not None else rater_history(study, rater)
    if available is None:
        available = len(pairs_open_to(study, rater))
    if unseen_gold is None:
        unseen_gold = len(gold_unseen(study, rater))
    ordinary = ordinary_to_give(study, history, available=available)
    gold = gold_to_give(study, history, unseen=unseen_gold, ordinary=ordinary)
    return RaterProgress(judged=history.judged,
                         remaining=len(history.open_ids) + ordinary + gold)


@dataclass(frozen=True)
class ShownPair:
    """What a rater is shown of an assignment: the prompt and the two outputs on their
    sides, and nothing else (no condition, no generation), so a page cannot leak a label."""

    assignment_id: int
    prompt: str
    left: str
    right: str


_PAIR_SHOWN_SQL = f"""
SELECT a.a_on_left, i.prompt, ga.text, gb.text
FROM {Assignment._meta.db_table} a
JOIN {Pair._meta.db_table} p ON p.id = a.pair_id
JOIN {Item._meta.db_table} i ON i.id = p.item_id
JOIN {Generation._meta.db_table} ga ON ga.id = p.generation_a_id
JOIN {Generation._meta.db_table} gb ON gb.id = p.generation_b_id
WHERE a.id = %s
"""


def pair_shown(assignment_id: int) -> ShownPair:
    """One light read: four columns, no model objects (`Assignment.DoesNotExist` if none)."""
    with connection.cursor() as cursor:
        cursor.execute(_PAIR_SHOWN_SQL, [assignment_id])
        row = cursor.fetchone()
    if row is None:
        raise Assignment.DoesNotExist(f"no assignment {assignment_id}")
    a_on_left, prompt, a, b = row
    left, right = (a, b) if a_on_left else (b, a)
    return ShownPair(assignment_id, prompt=prompt, left=left, right=right)


def enrolments_in(study_id: int, rater: AbstractBaseUser) -> QuerySet[Enrolment]:
    """The rater's enrolment in the study, only while the rater is also in `study.raters`
    (a rater removed from a study is not enrolled, whatever rows remain): one read."""
    return Enrolment.objects.filter(study_id=study_id, rater=rater, study__raters=rater)


def studies_for_rater(rater: AbstractBaseUser) -> list[Study]:
    """Open studies the rater is enrolled in and not blocked from."""
    return list(
        Study.objects.filter(raters=rater, status=Study.Status.OPEN)
        .exclude(enrolments__rater=rater, enrolments__blocked_at__isnull=False)
        .order_by("name")
    )
