"""Reads that the study pages need, kept out of the views."""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import NamedTuple

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import Avg, Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from annotations.models import (
    Assignment,
    Calibration,
    Condition,
    Enrolment,
    Execution,
    ExecutionJob,
    Generation,
    GoldAnswer,
    Item,
    Judgment,
    ModelEntry,
    Pair,
    Problem,
    Study,
)


def problems_drawn(
    *, dataset: str, task_contains: str = "", prompt_contains: str = "", item_count: int,
    seed: int,
) -> list[Problem]:
    """`item_count` available problems of `dataset` matching the filters, drawn with `seed`
    (the same seed draws the same problems), in id order: a study's library items."""
    problems = Problem.objects.filter(dataset=dataset, unavailable_reason="")
    if task_contains:
        problems = problems.filter(task_id__icontains=task_contains)
    if prompt_contains:
        problems = problems.filter(prompt__icontains=prompt_contains)
    ids = sorted(problems.values_list("id", flat=True))
    chosen = random.Random(seed).sample(ids, min(item_count, len(ids)))
    return list(Problem.objects.filter(id__in=chosen).order_by("id"))


@dataclass(frozen=True)
class ConditionProgress:
    condition: Condition
    total: int
    done: int
    running: int
    failed: int
    cancelled: int = 0

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0

    @property
    def calibration(self) -> Calibration | None:
        """The condition's calibration while its outputs wait for it (none exist and it is
        not done: waiting, running or failed), else None."""
        calibration = getattr(self.condition, "calibration", None)
        if self.total or calibration is None or calibration.status == Calibration.Status.DONE:
            return None
        return calibration


@dataclass(frozen=True)
class StudyProgress:
    conditions: list[ConditionProgress]
    failures: list[Generation]
    total: int
    done: int
    failed: int
    cancelled: int = 0
    eta_s: float | None = None
    checks_pending: int = 0
    # Conditions whose calibration is waiting or running: their outputs are still to come.
    calibrating: int = 0
    # Pass@1 checks that could not run (their worker died twice, or our code failed).
    check_failures: list[ExecutionJob] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        """No generation is waiting or running any more, no Pass@1 check is due, and no
        calibration will add generations."""
        return (
            self.done + self.failed + self.cancelled >= self.total
            and not self.checks_pending
            and not self.calibrating
        )

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 0


def study_progress(study: Study) -> StudyProgress:
    """Generation counts per condition, plus the failed rows with their reasons."""
    per_condition = study.conditions.select_related("calibration").annotate(
        total=Count("generations"),
        done=Count("generations", filter=Q(generations__status=Generation.Status.DONE)),
        running=Count("generations", filter=Q(generations__status=Generation.Status.RUNNING)),
        failed=Count("generations", filter=Q(generations__status=Generation.Status.FAILED)),
        cancelled=Count(
            "generations", filter=Q(generations__status=Generation.Status.CANCELLED)
        ),
    )
    per_condition = list(per_condition)
    rows = [
        ConditionProgress(c, total=c.total, done=c.done, running=c.running, failed=c.failed,
                          cancelled=c.cancelled)
        for c in per_condition
    ]
    done = sum(r.done for r in rows)
    failed = sum(r.failed for r in rows)
    cancelled = sum(r.cancelled for r in rows)
    total = sum(r.total for r in rows)
    failures = list(
        Generation.objects.filter(item__study=study, status=Generation.Status.FAILED)
        .select_related("item", "condition")
        .order_by("id")[:50]
    )
    # Unchecked outputs are waiting for their check, unless it failed (its reason is listed).
    checks_pending = Generation.objects.filter(
        item__study=study,
        status=Generation.Status.DONE,
        item__problem__isnull=False,
        execution__isnull=True,
    ).exclude(execution_job__status=ExecutionJob.Status.FAILED).count()
    check_failures = list(
        ExecutionJob.objects.filter(
            generation__item__study=study, status=ExecutionJob.Status.FAILED
        )
        .select_related("generation__item", "generation__condition")
        .order_by("id")[:50]
    )
    return StudyProgress(
        conditions=rows,
        failures=failures,
        total=total,
        done=done,
        failed=failed,
        cancelled=cancelled,
        eta_s=_eta_s(study, remaining={
            c.id: c.total - c.done - c.failed - c.cancelled for c in per_condition
        }),
        checks_pending=checks_pending,
        calibrating=sum(
            r.calibration is not None and not r.calibration.finished for r in rows
        ),
        check_failures=check_failures,
    )


# Outputs whose pace measures the rate: recent enough to follow a change of machine load.
_ETA_WINDOW = 20


def _eta_s(study: Study, *, remaining: dict[int, int], now=None) -> float | None:
    """Seconds until the remaining generations (`remaining`: condition id → outputs still
    to come) are done, from the rate measured so far: each takes its condition's mean
    decode time (`latency_s`; the study's mean where a condition has none yet), times the
    wall-clock seconds the last outputs took per second of decoding, counted up to now
    (model loads, Pass@1 checks sharing the worker, an output still running; several
    workers make it below 1). None until an output is done."""
    if sum(remaining.values()) <= 0:
        return None
    now = now or timezone.now()
    recent = list(
        Generation.objects.filter(item__study=study, status=Generation.Status.DONE,
                                  finished_at__isnull=False, latency_s__gt=0)
        .order_by("-finished_at")
        .values_list("condition_id", "finished_at", "latency_s")[:_ETA_WINDOW]
    )
    if not recent:
        return None
    means = dict(
        Generation.objects.filter(item__study=study, status=Generation.Status.DONE,
                                  latency_s__gt=0)
        .values_list("condition_id").annotate(Avg("latency_s"))
    )
    overall = statistics.fmean(means.values())
    work_s = sum(n * means.get(condition_id, overall) for condition_id, n in remaining.items())
    started = min(finished - timedelta(seconds=latency) for _, finished, latency in recent)
    wall_per_decode = (now - started).total_seconds() / sum(row[2] for row in recent)
    return work_s * wall_per_decode


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


def pair_previewed(study: Study, index: int) -> tuple[ShownPair | None, int]:
    """The study's pair number `index` (wrapping around, in id order) as a rater would see
    it, for the staff preview, and how many pairs there are. The sides alternate with the
    index; no assignment exists (`assignment_id` 0)."""
    pairs = Pair.objects.filter(study=study).order_by("id")
    total = pairs.count()
    if not total:
        return None, 0
    pair = pairs.select_related("item", "generation_a", "generation_b")[index % total]
    a, b = pair.generation_a.text, pair.generation_b.text
    left, right = (a, b) if index % 2 == 0 else (b, a)
    return ShownPair(0, prompt=pair.item.prompt, left=left, right=right), total


@dataclass(frozen=True)
class GoldCandidate:
    """One ordinary pair shown on the setup page to be made an attention check: number
    `index` (from 0, in id order) of `total`, with its item and both outputs read."""

    pair: Pair
    index: int
    total: int


def gold_candidate(study: Study, index: int) -> GoldCandidate | None:
    """The study's ordinary pair number `index` (wrapping around) that is not yet a gold
    check, or None while no pair exists."""
    copied = Pair.objects.filter(
        gold_copy=True, generation_a=OuterRef("generation_a"),
        generation_b=OuterRef("generation_b"),
    )
    pairs = Pair.objects.filter(
        study=study, gold_copy=False, gold__isnull=True
    ).exclude(Exists(copied)).order_by("id")
    total = pairs.count()
    if not total:
        return None
    index %= total
    pair = pairs.select_related(
        "item", "generation_a__condition", "generation_b__condition"
    )[index]
    return GoldCandidate(pair, index=index, total=total)


def gold_pairs(study: Study) -> list[Pair]:
    """The study's attention checks, oldest first, each with its answer (`gold`), its
    outputs' conditions, `n_given` (how many raters were given it) and `source_id` (the
    ordinary pair it copies; for a pair marked gold itself, in the admin, its own id)."""
    source = Pair.objects.filter(
        gold_copy=False, generation_a=OuterRef("generation_a"),
        generation_b=OuterRef("generation_b"),
    ).values("id")[:1]
    return list(
        Pair.objects.filter(study=study, gold__isnull=False)
        .select_related("gold", "item", "generation_a__condition", "generation_b__condition")
        .annotate(n_given=Count("assignments"),
                  source_id=Subquery(source))
        .order_by("id")
    )


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


@dataclass(frozen=True)
class RaterQuality:
    rater_id: int
    username: str
    judged: int
    gold_total: int
    gold_correct: int
    median_time_s: float | None
    blocked: bool

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_total if self.gold_total else None

    @property
    def score(self) -> float | None:
        """Share of attention checks passed (None without any); 0 once blocked."""
        if self.blocked:
            return 0.0
        return self.gold_accuracy


def rater_quality(study: Study) -> list[RaterQuality]:
    """Per-rater quality for staff: judgments, attention-check accuracy, median time."""
    rows: dict[int, list] = {}
    judgments = Judgment.objects.filter(assignment__pair__study=study).values_list(
        "assignment__rater_id", "assignment__rater__username", "gold_correct", "time_on_task_ms"
    )
    for rater_id, username, gold_correct, time_ms in judgments:
        rows.setdefault(rater_id, [username, 0, 0, 0, []])
        row = rows[rater_id]
        row[1] += 1
        if gold_correct is not None:
            row[2] += 1
            row[3] += int(gold_correct)
        if time_ms is not None:
            row[4].append(time_ms / 1000)
    blocked = set(
        Enrolment.objects.filter(study=study, blocked_at__isnull=False).values_list(
            "rater_id", flat=True
        )
    )
    return [
        RaterQuality(
            rater_id=rater_id,
            username=username,
            judged=judged,
            gold_total=gold_total,
            gold_correct=gold_correct,
            median_time_s=statistics.median(times) if times else None,
            blocked=rater_id in blocked,
        )
        for rater_id, (username, judged, gold_total, gold_correct, times) in sorted(rows.items())
    ]


# The one rule for which judgments count: the study page, the report and its exports, and
# the preference pairs all read `judgments_for_analysis`, so they cannot disagree.
COUNTING_RULE = (
    "Judgments on gold (attention-check) pairs test the rater: they feed the gold accuracy "
    "only. Every judgment of a rater the study blocked (after its number of failed attention "
    "checks) is left out, gold checks included; every other judgment counts."
)


@dataclass(frozen=True)
class ExcludedRater:
    rater_id: int
    judgments: int  # their judgments on ordinary pairs, all left out
    gold_failures: int

    @property
    def reason(self) -> str:
        return f"blocked after {self.gold_failures} failed attention check(s)"


@dataclass(frozen=True)
class JudgmentsForAnalysis:
    """A study's judgments split by `COUNTING_RULE`: `counted` feed every statistic, `gold`
    (the kept raters' attention checks) only the gold accuracy; `excluded` says who was left
    out, with how many judgments and why."""

    counted: QuerySet[Judgment]
    gold: QuerySet[Judgment]
    excluded: list[ExcludedRater]

    @property
    def excluded_judgments(self) -> int:
        return sum(rater.judgments for rater in self.excluded)


def judgments_for_analysis(study: Study) -> JudgmentsForAnalysis:
    """Which of the study's judgments count (`COUNTING_RULE`), and what the rule left out."""
    blocked = dict(
        Enrolment.objects.filter(study=study, blocked_at__isnull=False).values_list(
            "rater_id", "gold_failures"
        )
    )
    judgments = Judgment.objects.filter(assignment__pair__study=study)
    kept = judgments.exclude(assignment__rater_id__in=list(blocked))
    ordinary = Q(assignment__pair__gold__isnull=True)
    # Per blocked rater who judged at all: their ordinary judgments, all left out.
    left_out = dict(
        judgments.filter(assignment__rater_id__in=list(blocked))
        .order_by()
        .values_list("assignment__rater_id")
        .annotate(n=Count("id", filter=ordinary))
    )
    return JudgmentsForAnalysis(
        counted=kept.filter(ordinary),
        gold=kept.exclude(ordinary),
        excluded=[
            ExcludedRater(rater_id=rater_id, judgments=n, gold_failures=blocked[rater_id])
            for rater_id, n in sorted(left_out.items())
        ],
    )


def rater_pseudonyms(study: Study) -> dict[int, str]:
    """rater id → ``rater-1`` … ``rater-n``, over every rater who judged in the study, in id
    order: the one naming of every export (the report's files and the DPO pairs), so no
    username or database id leaves the database."""
    ids = Judgment.objects.filter(assignment__pair__study=study).values_list(
        "assignment__rater_id", flat=True
    )
    return {rid: f"rater-{i}" for i, rid in enumerate(sorted(set(ids)), start=1)}


def preference_pairs(study: Study) -> Iterator[dict]:
    """Judgments as DPO preference records: prompt, chosen, rejected, plus ids.

    Ties, "both bad" and every judgment `COUNTING_RULE` leaves out are left out."""
    judgments = (
        judgments_for_analysis(study)
        .counted.filter(winner__in=[Judgment.Winner.A, Judgment.Winner.B])
        .select_related(
            "assignment__pair__item",
            "assignment__pair__generation_a__condition",
            "assignment__pair__generation_b__condition",
        )
        .order_by("id")
    )
    names = rater_pseudonyms(study)
    for judgment in judgments.iterator(chunk_size=500):
        pair = judgment.assignment.pair
        chosen, rejected = pair.generation_a, pair.generation_b
        if judgment.winner == Judgment.Winner.B:
            chosen, rejected = rejected, chosen
        yield {
            "prompt": pair.item.prompt,
            "chosen": chosen.text,
            "rejected": rejected.text,
            "study_id": study.id,
            "item_id": pair.item_id,
            "task_id": pair.item.task_id,
            "pair_id": pair.id,
            "judgment_id": judgment.id,
            "rater": names[judgment.assignment.rater_id],
            "chosen_condition": chosen.condition.name,
            "rejected_condition": rejected.condition.name,
        }


def guard_only_checks(study: Study) -> int:
    """How many of the study's Pass@1 checks ran in the guard-only sandbox (no namespaces)."""
    return Execution.objects.filter(generation__item__study=study, containment="guard").count()


@dataclass(frozen=True)
class ConditionModel:
    """Which weights a condition's outputs come from, as reports and exports name them.

    ``key``: the model's key (``default`` for the deployment's own model), or for an
    alignment-vector condition ``base→aligned@λ`` (e.g. ``smol→smol-dpo@0.5``).
    ``fingerprint``: the content fingerprint its finished outputs recorded (the most common
    one, should the file have changed mid-study), else the registry's for a plain registered
    model, else "" (the default model and merged weights are fingerprinted by the worker)."""

    key: str
    base_key: str
    aligned_key: str | None
    alignment_lambda: float | None
    fingerprint: str


def _model_key(base_key: str, aligned_key: str | None, lam: float | None) -> str:
    return base_key if aligned_key is None else f"{base_key}→{aligned_key}@{lam:g}"


def condition_models(study: Study) -> dict[int, ConditionModel]:
    """`ConditionModel` of each of the study's conditions, by condition id (two queries)."""
    recorded: dict[int, Counter[str]] = {}
    for condition_id, fingerprint in Generation.objects.filter(
        item__study=study, status=Generation.Status.DONE
    ).exclude(model_fingerprint="").values_list("condition_id", "model_fingerprint"):
        recorded.setdefault(condition_id, Counter())[fingerprint] += 1
    out = {}
    for condition in study.conditions.select_related("model", "aligned_model"):
        aligned_key = condition.aligned_model.key if condition.aligned_model_id else None
        fingerprint = ""
        if condition.id in recorded:
            fingerprint = recorded[condition.id].most_common(1)[0][0]
        elif condition.model_id and aligned_key is None:
            fingerprint = condition.model.fingerprint
        out[condition.id] = ConditionModel(
            key=_model_key(condition.model_key, aligned_key, condition.alignment_lambda),
            base_key=condition.model_key,
            aligned_key=aligned_key,
            alignment_lambda=condition.alignment_lambda,
            fingerprint=fingerprint,
        )
    return out


def condition_model_key(condition: Condition) -> str:
    """`ConditionModel.key` of one condition (no query when its models are selected)."""
    aligned_key = condition.aligned_model.key if condition.aligned_model_id else None
    return _model_key(condition.model_key, aligned_key, condition.alignment_lambda)


def models_offered() -> list[ModelEntry]:
    """The registered models a condition may use: the valid ones."""
    return list(ModelEntry.objects.filter(status=ModelEntry.Status.VALID))

