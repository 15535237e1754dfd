import random
from collections import Counter

import pytest

from annotations import services
from annotations.models import Assignment, Judgment, Pair
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db


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


def test_open_assignment_is_resumed_not_replaced(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    first = services.assignment_next(study=study, rater=alice)
    assert services.assignment_next(study=study, rater=alice) == first


@pytest.mark.parametrize(
    "a_on_left, choice, winner",
    [(True, "left", "a"), (False, "left", "b"), (True, "right", "b"), (False, "right", "a"),
     (False, "tie", "tie")],
)
def test_judgment_maps_screen_side_to_condition_order(users, a_on_left, choice, winner):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    Assignment.objects.filter(id=a.id).update(a_on_left=a_on_left)
    a.refresh_from_db()
    judgment, created = services.judgment_submit(assignment=a, choice=choice)
    assert created and judgment.winner == winner and judgment.choice == choice


def test_repeated_submit_keeps_the_first_judgment(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    first, created = services.judgment_submit(assignment=a, choice="left")
    again, created_again = services.judgment_submit(assignment=a, choice="right")
    assert created and not created_again
    assert again.id == first.id and again.choice == "left"
    assert Judgment.objects.filter(assignment=a).count() == 1


def test_unknown_choice_is_rejected(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    with pytest.raises(ValueError, match="unknown choice"):
        services.judgment_submit(assignment=a, choice="both")
