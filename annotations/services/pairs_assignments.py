"""Pairs and assignments: pairing finished outputs, and leasing pairs to raters.

Generation writes (leases, Pass@1 checks, the problem library) live in `generations`,
`executions` and `problems`."""

from __future__ import annotations

import logging
import math
import random

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from analysis.adaptive import pair_priorities, score_variance
from annotations.highlight import pairs_warm
from annotations.models import Assignment, Generation, GoldAnswer, Item, Judgment, Pair, Study
from annotations.selectors import (
    PAIR_TAKEN_SQL,
    RaterProgress,
    condition_pair_scores,
    gold_to_give,
    gold_unseen,
    newcomer_share,
    ordinary_to_give,
    pair_taken,
    pairs_open_to,
    rater_history,
    rater_progress,
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


def pair_has_room(pair: Pair, *, now, excluding: Assignment | None = None) -> bool:
    """Whether the pair still has room for one more rater (gold pairs always do)."""
    if pair.gold_or_none() is not None:
        return True
    taken = pair_taken(pair.id, now=now, excluding_id=excluding.id if excluding else None)
    return taken < pair.study.overlap


_PAIR_TABLE = Pair._meta.db_table
_LOCK_SQL = f"SELECT 1 FROM {_PAIR_TABLE} WHERE id = %s FOR UPDATE"
# SQLite has no row locks: a write that changes nothing takes the database's write lock.
_LOCK_SQLITE_SQL = f"UPDATE {_PAIR_TABLE} SET study_id = study_id WHERE id = %s"


def pair_lock(pair_id: int, *, wait: bool = False) -> bool:
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


_STUDY_TABLE = Study._meta.db_table
_STUDY_LOCK_SQL = f"SELECT 1 FROM {_STUDY_TABLE} WHERE id = %s FOR UPDATE"
_STUDY_LOCK_SQLITE_SQL = f"UPDATE {_STUDY_TABLE} SET id = id WHERE id = %s"


def study_lock(study_id: int) -> None:
    """Take the study's row lock for this transaction (SQLite: the database's write lock,
    as `pair_lock`): newcomers' leases are counted and made one at a time. Always taken
    before a pair's lock, never after, so it cannot deadlock with `pair_lock`."""
    with connection.cursor() as cursor:
        if connection.features.has_select_for_update:
            cursor.execute(_STUDY_LOCK_SQL, [study_id])
        else:
            cursor.execute(_STUDY_LOCK_SQLITE_SQL, [study_id])


class _NewcomersFull(Exception):
    """Raters who have answered nothing hold their share of the study's pairs already."""


# However small the study, this many raters may start at once.
NEWCOMER_LEASES_AT_LEAST = 5


def _newcomer_room(study: Study, *, now) -> bool:
    """Whether raters who have answered nothing in the study may lease one more ordinary
    pair: together they hold fewer than `NEWCOMER_PAIR_SHARE_PERCENT` of the judgments its
    ordinary pairs still need (at least `NEWCOMER_LEASES_AT_LEAST`), so invented participant
    ids cannot lease a study empty."""
    leases, places = newcomer_share(study, now=now)
    share = math.floor(settings.NEWCOMER_PAIR_SHARE_PERCENT / 100 * places)
    return leases < max(NEWCOMER_LEASES_AT_LEAST, share)


# A lease, inserted only while the pair has room below the bound (the count in the same
# statement as the insert, after `pair_lock`, so it reads what was committed before the
# lock was granted); gold pairs pass no bound. Parameters: pair, study, rater, a_on_left,
# created_at, lease_until, then `selectors.PAIR_TAKEN_SQL`'s (pair, 0, now), the bound.
_LEASE_SQL = f"""
INSERT INTO {Assignment._meta.db_table}
    (pair_id, study_id, rater_id, a_on_left, created_at, lease_until)
SELECT %s, %s, %s, %s, %s, %s
WHERE CAST(%s AS INTEGER) IS NULL OR ({PAIR_TAKEN_SQL}) < %s
RETURNING id
"""


def _lease_insert(
    *, pair_id: int, study: Study, rater: AbstractBaseUser, a_on_left: bool, now,
    bound: int | None, first: bool,
) -> Assignment | None:
    """Insert the rater's lease on the pair if fewer than `bound` places are taken
    (`None`: no bound); the new row, or None. Call with the pair locked. `first`: the
    rater has answered nothing in the study yet (a short lease, `Study.lease_end`)."""
    adapt = connection.ops.adapt_datetimefield_value
    lease_until = study.lease_end(now, first=first)
    with connection.cursor() as cursor:
        cursor.execute(_LEASE_SQL, [pair_id, study.id, rater.pk, a_on_left, adapt(now),
                                    adapt(lease_until), bound, pair_id, 0, adapt(now), bound])
        row = cursor.fetchone()
    if row is None:
        return None
    made = Assignment(id=row[0], pair_id=pair_id, study=study, rater=rater,
                      a_on_left=a_on_left, created_at=now, lease_until=lease_until)
    made._state.adding, made._state.db = False, connection.alias
    return made


def assignment_next(
    *, study: Study, rater: AbstractBaseUser, rng: random.Random | None = None
) -> Assignment | None:
    """The rater's open assignment in this study, or a new one, or None when done
    (`assignment_next_counted` without the progress)."""
    return assignment_next_counted(study=study, rater=rater, rng=rng)[0]


class _RaterGotOneMeanwhile(Exception):
    """A parallel request of the same rater was given a pair while this one chose."""


# Each retry reads the rater's history again and finds the pair the parallel request got;
# only a rater who judges it within the same instant would need a second retry.
_RETRIES = 3


def assignment_next_counted(
    *, study: Study, rater: AbstractBaseUser, rng: random.Random | None = None
) -> tuple[Assignment | None, RaterProgress]:
    """The rater's open assignment in this study, or a new one, or None when done; and
    the rater's progress after it, counted on the way (the rate page shows both).

    - An open assignment is resumed (its lease renewed) while its pair still needs it;
      an expired one whose pair got its judgments from others is released.
    - New work: an unseen gold pair with the chance `_gold_chance` (the rater's share
      `study.gold_rate` of gold pairs, spread at random); otherwise the pair
      with the fewest live raters (judged or leased) below `study.overlap`, ties broken
      (with `study.adaptive_assignment`) by the condition pair whose win rate is least
      certain, then by the condition pair this rater has seen least (balance), then at
      random.
    - Never a pair this rater has had; never more than `study.items_per_rater` ordinary pairs.
    - The side is randomized and stored. Safe under concurrent raters (see `pair_lock`).

    - A rater holds one open assignment per study at a time (the database's
      `assignment_one_open_per_rater`): parallel requests of one rater all get the same.

    A new assignment is returned bare (related rows read when asked for; the rate page
    reads what it shows with `selectors.pair_shown`)."""
    rng = rng or random.SystemRandom()
    for _ in range(_RETRIES):
        try:
            return _assignment_next_once(study=study, rater=rater, rng=rng)
        except _RaterGotOneMeanwhile:
            continue
    return _assignment_next_once(study=study, rater=rater, rng=rng)


def _assignment_next_once(
    *, study: Study, rater: AbstractBaseUser, rng: random.Random
) -> tuple[Assignment | None, RaterProgress]:
    now = timezone.now()
    history = rater_history(study, rater)
    # Until a rater answers something here, their leases are short and, together with every
    # other such rater's, bounded (`_newcomer_room`).
    first = history.judged == 0
    made, available, gold = None, None, False
    if history.open_ids:
        resumed = Assignment.objects.select_related("pair").get(id=history.open_ids[0])
        resumed.pair.study = study
        if not resumed.lease_expired(now) or pair_has_room(resumed.pair, now=now,
                                                           excluding=resumed):
            resumed.lease_until = study.lease_end(now, first=first)
            Assignment.objects.filter(id=resumed.id).update(lease_until=resumed.lease_until)
            return resumed, rater_progress(study, rater, history=history)
        Assignment.objects.filter(id=resumed.id).update(released_at=now)
        history = history.with_released(resumed.id)

    gold_ids = gold_unseen(study, rater)
    capped = (study.items_per_rater is not None
              and history.ordinary_kept >= study.items_per_rater)
    candidates = [] if capped else pairs_open_to(study, rater, now=now)
    ordinary = ordinary_to_give(study, history, available=len(candidates))
    if gold_ids and rng.random() < _gold_chance(study, history, unseen=len(gold_ids),
                                                ordinary=ordinary):
        rng.shuffle(gold_ids)
        made = _assignment_first(gold_ids, study=study, rater=rater, rng=rng, now=now,
                                 gold=True, first=first)
        gold = made is not None
        available = len(candidates)

    if made is None and not capped:
        seen = history.seen_by_conditions()
        rng.shuffle(candidates)
        widest = _ci_widths(study, candidates) if study.adaptive_assignment else {}
        candidates.sort(
            key=lambda row: (row.n_raters, -widest.get(row.conditions, 0), seen[row.conditions])
        )
        ids = [row.pair_id for row in candidates]
        made = _assignment_first(ids, study=study, rater=rater, rng=rng, now=now,
                                 first=first)
        if made is not None or not ids:
            available = max(len(ids) - 1, 0)  # the others, unless the tries changed them
        else:
            # Every candidate was locked (other raters being given it at this instant) or
            # filled meanwhile. A locked one may still have room: wait for those locks
            # rather than tell this rater that the study is done (the load benchmark
            # caught that at a study's end).
            made = _assignment_first(ids, study=study, rater=rater, rng=rng, now=now,
                                     wait=True, first=first)
    elif made is None:
        available = 0  # the rater has had as many ordinary pairs as the study allows

    if made is not None:
        history = history.with_new(made.id, gold=gold)
    return made, rater_progress(study, rater, history=history, available=available,
                                unseen_gold=len(gold_ids) - gold)


def _gold_chance(study: Study, history, *, unseen: int, ordinary: int) -> float:
    """The chance that the rater's next pair is a gold one: the gold pairs still due to them
    (`gold_to_give`) over all pairs still due, so they are spread at random through the
    session and their number is the one the rate page counted; rate 1: gold first."""
    if study.gold_rate >= 1:
        return 1.0
    due = gold_to_give(study, history, unseen=unseen, ordinary=ordinary)
    return due / (due + ordinary) if due else 0.0


def _ci_widths(study: Study, candidates: list) -> dict[tuple[int, int], float]:
    """Adaptive assignment: each candidate condition pair's priority under
    `analysis.adaptive`'s widest-CI rule (a pair's current win-rate standard error)."""
    scores = condition_pair_scores(study)
    pairs = sorted({row.conditions for row in candidates})
    n, total, squares = (
        np.array([getattr(scores.get(pair), field, 0) for pair in pairs], float)
        for field in ("n", "total", "squares")
    )
    priorities = pair_priorities(n, score_variance(n, total, squares), "widest")
    return dict(zip(pairs, priorities.tolist(), strict=True))


def _assignment_first(
    pair_ids: list[int], *, study: Study, rater: AbstractBaseUser, rng: random.Random, now,
    gold: bool = False, wait: bool = False, first: bool = False,
) -> Assignment | None:
    """The first of the pairs that can be leased to the rater, leased; None if none can."""
    for pair_id in pair_ids:
        try:
            made = _assignment_try(pair_id=pair_id, study=study, rater=rater, rng=rng,
                                   now=now, gold=gold, wait=wait, first=first)
        except _NewcomersFull:
            return None  # newcomers hold their share: this one waits, as in a full study
        if made is not None:
            return made
    return None


def _assignment_try(
    *, pair_id: int, study: Study, rater: AbstractBaseUser, rng: random.Random, now,
    gold: bool = False, wait: bool = False, first: bool = False,
) -> Assignment | None:
    """Lease the pair to the rater if it is free and still needs a judgment; else None.

    `gold`: a gold pair, which always has room. `wait`: wait for another rater's lock on
    the pair instead of skipping it. `first`: the rater has answered nothing in the study
    yet: a short lease, and only while newcomers hold less than their share (checked again
    under the study's lock, so parallel newcomers cannot pass it together). Returns the
    bare row (no related objects read)."""
    try:
        with transaction.atomic():
            if first and not gold:
                study_lock(study.id)
                if not _newcomer_room(study, now=now):
                    raise _NewcomersFull
            if not pair_lock(pair_id, wait=wait):
                return None  # another rater is being given this pair right now
            return _lease_insert(
                pair_id=pair_id,
                study=study,
                rater=rater,
                a_on_left=rng.random() < 0.5,
                now=now,
                bound=None if gold else study.overlap,
                first=first,
            )
    except IntegrityError:
        # Another request of the same rater (a second tab, a double click) was just given
        # a pair: this pair (`assignment_once_per_rater`) or another one
        # (`assignment_one_open_per_rater`). That one is theirs to resume.
        raise _RaterGotOneMeanwhile from None


class GoldPairInUse(Exception):
    """A gold pair raters have already been given: changing or removing it would change
    what their answers meant. The message is meant for staff."""


def gold_pair_set(*, pair: Pair, winner: str | None) -> Pair | None:
    """Make the ordinary `pair` an attention check whose better output is `winner` ("a" or
    "b", condition order), as an extra copy of its two outputs: the pair itself stays in
    its comparison, so no condition pair loses a pair. Again: changes the answer; `None`:
    removes the check. Either only while no rater has had the copy (`GoldPairInUse`), so
    no answer changes meaning and no judgment is deleted. Returns the copy, or None."""
    if winner not in (Judgment.Winner.A, Judgment.Winner.B, None):
        raise ValueError(f"a gold answer is 'a' or 'b', not {winner!r}")
    if pair.gold_copy:
        raise ValueError("that pair is itself a gold copy")
    with transaction.atomic():
        copy = Pair.objects.filter(
            generation_a_id=pair.generation_a_id, generation_b_id=pair.generation_b_id,
            gold_copy=True,
        ).select_for_update().first()
        if copy is not None and copy.assignments.exists():
            gold = copy.gold_or_none()
            if winner is None or gold is None or gold.winner != winner:
                raise GoldPairInUse(
                    "Raters have had this gold pair: it stays as it is, with their answers."
                )
        if winner is None:
            if copy is not None:
                copy.delete()
            return None
        if copy is None:
            copy = Pair.objects.create(
                study_id=pair.study_id, item_id=pair.item_id,
                generation_a_id=pair.generation_a_id, generation_b_id=pair.generation_b_id,
                gold_copy=True,
            )
        GoldAnswer.objects.update_or_create(pair=copy, defaults={"winner": winner})
    return copy
