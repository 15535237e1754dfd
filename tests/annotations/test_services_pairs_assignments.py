"""services.pairs_assignments: pairing, leases, the per-rater cap, balance, pair design,
the live rule, concurrency."""

import random
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, connections
from django.utils import timezone

from annotations import selectors, services
from annotations.models import Assignment, Pair, Study
from tests.annotations.conftest import expire, finish_generations, make_gold, make_study

pytestmark = pytest.mark.django_db


def test_expired_lease_frees_the_pair_for_another_rater(users):
    staff, alice, bob = users
    study = make_study(n_items=1, overlap=1, raters=[alice, bob],
                       conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})])
    finish_generations(study)
    held = services.assignment_next(study=study, rater=alice)
    assert held.lease_until > timezone.now()
    assert services.assignment_next(study=study, rater=bob) is None, "the lease holds the pair"
    expire(held)
    taken = services.assignment_next(study=study, rater=bob)
    assert taken is not None and taken.pair_id == held.pair_id


def test_expired_open_assignment_is_resumed_when_still_needed(leased):
    held = leased
    expire(held)
    again = services.assignment_next(study=held.pair.study, rater=held.rater)
    assert again.id == held.id and again.lease_until > timezone.now()


def test_items_per_rater_cap(users):
    _, alice, _ = users
    study = make_study(n_items=3, overlap=1, raters=[alice])
    Study.objects.filter(id=study.id).update(items_per_rater=4)
    study.refresh_from_db()
    finish_generations(study)
    n = 0
    while (a := services.assignment_next(study=study, rater=alice)) is not None:
        services.judgment_submit(assignment=a, choice="tie")
        n += 1
    assert n == 4


def test_condition_pairs_are_balanced_per_rater(users):
    _, alice, _ = users
    study = make_study(n_items=6, overlap=1, raters=[alice])
    Study.objects.filter(id=study.id).update(items_per_rater=9)
    study.refresh_from_db()
    finish_generations(study)
    rng = random.Random(3)
    while (a := services.assignment_next(study=study, rater=alice, rng=rng)) is not None:
        services.judgment_submit(assignment=a, choice="tie")
    per_condition_pair = Counter(
        (a.pair.generation_a.condition_id, a.pair.generation_b.condition_id)
        for a in Assignment.objects.filter(rater=alice).select_related("pair__generation_a",
                                                                      "pair__generation_b")
    )
    assert sorted(per_condition_pair.values()) == [3, 3, 3]


def test_open_pairs_and_taken_places_follow_the_live_rule_in_every_state(users):
    """`pairs_open_to` and `pair_taken` are SQL written out (selectors.rater._LIVE_SQL): every
    state an assignment can be in, on pairs at, below and above the overlap, with and
    without the rater's own, a gold pair among them, must count as the model's rule
    (`Assignment.objects.live`, the rule's one statement) says."""
    _, alice, bob = users
    User = get_user_model()
    others = [User.objects.create_user(f"other-{i}", password="pw-other-123") for i in range(16)]
    study = make_study(n_items=4, overlap=2, raters=[alice, bob, *others])
    finish_generations(study)
    make_gold(study, rate=0.0, block_after=9)
    now = timezone.now()
    states = {
        "judged": dict(completed_at=now - timedelta(minutes=5), released_at=None,
                       lease_until=now - timedelta(minutes=1)),
        "leased": dict(lease_until=now + timedelta(minutes=5)),
        "expired": dict(lease_until=now - timedelta(seconds=1)),
        "ends now": dict(lease_until=now),
        "no lease": dict(lease_until=None),
        "released": dict(released_at=now - timedelta(minutes=1),
                         lease_until=now + timedelta(minutes=5)),
    }
    # Whether an assignment in each state holds a place in its pair's overlap.
    holds_place = {"judged": True, "leased": True, "expired": False, "ends now": False,
                   "no lease": True, "released": False}
    state_of = {}
    closed = {"judged", "released"}  # the database allows a rater one open assignment
    rng = random.Random(7)
    pairs = list(Pair.objects.filter(study=study).order_by("id"))
    holding = set()
    for pair in pairs:
        for rater in rng.sample([bob, *others], rng.randint(0, 4)):
            state = rng.choice(sorted(states if rater.id not in holding else closed))
            if state not in closed:
                holding.add(rater.id)
            made = Assignment.objects.create(pair=pair, rater=rater, a_on_left=True,
                                             **states[state])
            state_of[made.id] = state
    for n, pair in enumerate(pairs[::3]):
        state = "judged" if n else "expired"
        made = Assignment.objects.create(pair=pair, rater=alice, a_on_left=True, **states[state])
        state_of[made.id] = state

    got = {row.pair_id: row for row in selectors.pairs_open_to(study, alice, now=now)}
    expected = {}
    for pair in pairs:
        held = list(pair.assignments.all())
        live_ids = {a.id for a in held if holds_place[state_of[a.id]]}
        live = len(live_ids)
        assert set(pair.assignments.live(now).values_list("id", flat=True)) == live_ids, (
            f"pair {pair.id}: the queryset, the rule's statement")
        assert selectors.pair_taken(pair.id, now=now) == live, f"pair {pair.id}: taken places"
        if held:
            assert selectors.pair_taken(pair.id, now=now, excluding_id=held[0].id) \
                == live - (held[0].id in live_ids), f"pair {pair.id}: taken, one left out"
        if hasattr(pair, "gold") or any(a.rater_id == alice.id for a in held):
            continue
        if live < study.overlap:
            expected[pair.id] = (live, (pair.generation_a.condition_id,
                                        pair.generation_b.condition_id))
    assert {k: (r.n_raters, r.conditions) for k, r in got.items()} == expected, (
        "pairs_open_to disagrees with the live rule on which pairs are open"
    )
    assert 0 < len(expected) < len(pairs), "the states drawn should leave some pairs open"


def test_vs_first_design_pairs_each_condition_with_the_first():
    study = make_study(n_items=2)
    Study.objects.filter(id=study.id).update(pair_design=Study.PairDesign.VS_FIRST)
    study.refresh_from_db()
    finish_generations(study)
    dense = study.conditions.get(position=0)
    pairs = Pair.objects.filter(study=study).select_related("generation_a")
    assert pairs.count() == 2 * 2
    assert all(p.generation_a.condition_id == dense.id for p in pairs)


@pytest.mark.django_db(transaction=True)
def test_concurrent_raters_never_exceed_overlap(settings):
    """Many raters asking at once (threads, one connection each) never over-assign a pair."""
    # New raters all: let them hold every pair (the newcomers' share is tested on its own).
    settings.NEWCOMER_PAIR_SHARE_PERCENT = 100
    study = make_study(n_items=2, overlap=2)
    finish_generations(study)
    User = get_user_model()
    raters = [User.objects.create_user(f"r{i}") for i in range(8)]
    study.raters.add(*raters)
    errors = []
    barrier = threading.Barrier(len(raters))

    def work(rater):
        try:
            barrier.wait()
            for _ in range(3):
                a = services.assignment_next(study=study, rater=rater)
                if a is None:
                    return
                services.judgment_submit(assignment=a, choice="tie")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(r,)) for r in raters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if connection.vendor == "sqlite":
        # SQLite serializes writers; a writer that waits too long errors instead of over-assigning.
        errors = [e for e in errors if "locked" not in str(e)]
    assert not errors, errors
    counts = Counter(Assignment.objects.values_list("pair_id", flat=True))
    assert max(counts.values()) <= 2
    assert sum(counts.values()) == 12, "every pair gets exactly its overlap"


def test_pairs_follow_condition_order_and_are_idempotent():
    study = make_study(n_items=2)
    finish_generations(study)
    assert Pair.objects.filter(study=study).count() == 2 * 3
    for pair in Pair.objects.filter(study=study).select_related(
        "generation_a__condition", "generation_b__condition"
    ):
        assert pair.generation_a.condition.position < pair.generation_b.condition.position
    for item in study.items.all():
        assert services.pairs_create(item=item) == 0


def test_assignment_least_annotated_first_and_never_the_same_pair_twice(users):
    _, alice, bob = users
    study = make_study(n_items=2, overlap=2, raters=[alice, bob])
    finish_generations(study)
    rng = random.Random(1)
    seen = []
    while (a := services.assignment_next(study=study, rater=alice, rng=rng)) is not None:
        seen.append(a.pair_id)
        services.judgment_submit(assignment=a, choice="tie")
    assert len(seen) == len(set(seen)) == 6, "alice must get every pair exactly once"
    first_bob = services.assignment_next(study=study, rater=bob, rng=rng)
    assert first_bob.pair_id in seen
    # Overlap 2: after both raters did everything, no pair has a third rater.
    services.judgment_submit(assignment=first_bob, choice="left")
    counts = Counter(Assignment.objects.values_list("pair_id", flat=True))
    assert max(counts.values()) <= study.overlap


def test_assignment_goes_to_least_annotated_pair(users):
    staff, alice, bob = users
    study = make_study(n_items=1, overlap=3, raters=[alice, bob, staff])
    finish_generations(study)
    a1 = services.assignment_next(study=study, rater=alice)
    services.judgment_submit(assignment=a1, choice="left")
    b1 = services.assignment_next(study=study, rater=bob)
    assert b1.pair_id != a1.pair_id, "bob should get an unrated pair before a rated one"


def test_open_assignment_is_resumed_not_replaced(leased):
    first = leased
    assert services.assignment_next(study=first.pair.study, rater=first.rater) == first


def _judged_history(study: Study, rater) -> None:
    """`rater` has judged items 0–9: condition pair (0, 1) lopsided (condition 0 always
    won), (0, 2) and (1, 2) split evenly. Items 10 and 11 are left open."""
    conditions = list(study.conditions.order_by("position").values_list("id", flat=True))
    pairs = Pair.objects.filter(study=study, item__task_id__in=[f"HumanEval/{i}" for i in
                                                                 range(10)])
    for k, pair in enumerate(pairs.select_related("generation_a", "generation_b")):
        lopsided = (pair.generation_a.condition_id, pair.generation_b.condition_id) == (
            conditions[0], conditions[1])
        held = Assignment.objects.create(pair=pair, rater=rater, a_on_left=True,
                                         lease_until=timezone.now() + timedelta(hours=1))
        services.judgment_submit(assignment=held,
                                 choice="left" if lopsided or k % 2 else "right")


@pytest.mark.parametrize("adaptive", [True, False])
def test_adaptive_assignment_sends_raters_to_the_least_certain_condition_pairs(users, adaptive):
    _, alice, bob = users
    study = make_study(n_items=12, overlap=1, raters=[alice, bob])
    Study.objects.filter(id=study.id).update(adaptive_assignment=adaptive)
    study.refresh_from_db()
    finish_generations(study)
    _judged_history(study, bob)
    first = list(study.conditions.order_by("position").values_list("id", flat=True))[:2]
    rng, given = random.Random(0), []
    for _ in range(4):
        held = services.assignment_next(study=study, rater=alice, rng=rng)
        pair = Pair.objects.select_related("generation_a", "generation_b").get(id=held.pair_id)
        given.append([pair.generation_a.condition_id, pair.generation_b.condition_id])
        services.judgment_submit(assignment=held, choice="tie")
    if adaptive:  # the two split condition pairs' four open pairs come first
        assert first not in given, f"adaptive gave the settled condition pair: {given}"
    else:  # balance per rater: all three condition pairs within the first three
        assert first in given[:3], given
    assert services.assignment_next(study=study, rater=alice, rng=rng) is not None


@pytest.mark.parametrize("seed", range(2))
def test_one_honest_count_with_gold_checks_spread_through_the_session(users, seed):
    """The rate page said "0 judged · 46 to go" and ended at "48 judged · 0 to go": gold
    checks were counted once given, not before. Now the checks due (a share gold_rate of
    all pairs) are counted from the start, and judged + to go never changes."""
    _, alice, _ = users
    study = make_study(n_items=2, overlap=1, raters=[alice])  # 6 ordinary pairs
    finish_generations(study)
    for pair in Pair.objects.filter(study=study)[:3]:
        services.gold_pair_set(pair=pair, winner="a")
    Study.objects.filter(id=study.id).update(gold_rate=0.25)  # 1 check per 3 ordinary
    study.refresh_from_db()
    rng = random.Random(seed)
    totals, kinds = [], []
    while True:
        assignment, progress = services.assignment_next_counted(study=study, rater=alice,
                                                                rng=rng)
        totals.append(progress.judged + progress.remaining)
        if assignment is None:
            break
        gold = Pair.objects.get(id=assignment.pair_id).gold_copy
        kinds.append("gold" if gold else "pair")
        right = "left" if assignment.a_on_left else "right"  # every gold answer is "a"
        services.judgment_submit(assignment=assignment, choice=right if gold else "tie")
    assert set(totals) == {8}, totals
    assert Counter(kinds) == {"pair": 6, "gold": 2}
    assert selectors.rater_progress(study, alice) == selectors.RaterProgress(8, 0)
