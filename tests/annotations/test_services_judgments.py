"""services.judgments: side to condition order, one judgment per assignment, late and
too-fast submits, gold pairs, ratings."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotations import services
from annotations.models import Assignment, Enrolment, Judgment, Study
from tests.annotations.conftest import (
    REFUSALS,
    expire,
    finish_generations,
    make_gold,
    make_study,
    refused,
)

pytestmark = pytest.mark.django_db


def test_late_submit_accepted_while_the_pair_still_needs_it(leased):
    held = leased
    expire(held)
    judgment, created = services.judgment_submit(assignment=held, choice="left")
    assert created and judgment.assignment_id == held.id


def test_late_submit_rejected_once_someone_else_judged_the_pair(users):
    _, alice, bob = users
    study = make_study(n_items=1, overlap=1, raters=[alice, bob],
                       conditions=[("dense", {"kind": "dense"}), ("s", {"kind": "dense"})])
    finish_generations(study)
    held = services.assignment_next(study=study, rater=alice)
    expire(held)
    bobs = services.assignment_next(study=study, rater=bob)
    services.judgment_submit(assignment=bobs, choice="tie")
    with pytest.raises(services.JudgmentRejected, match="ran out"):
        services.judgment_submit(assignment=held, choice="left")
    held.refresh_from_db()
    assert held.released_at is not None and not Judgment.objects.filter(assignment=held).exists()
    # Alice is not handed the released pair again, and is done.
    assert services.assignment_next(study=study, rater=alice) is None


@pytest.mark.parametrize(
    "a_on_left, choice, winner",
    [(True, "left", "a"), (False, "left", "b"), (True, "right", "b"), (False, "right", "a"),
     (False, "tie", "tie")],
)
def test_judgment_maps_screen_side_to_condition_order(leased, a_on_left, choice, winner):
    a = leased
    Assignment.objects.filter(id=a.id).update(a_on_left=a_on_left)
    a.refresh_from_db()
    judgment, created = services.judgment_submit(assignment=a, choice=choice)
    assert created and judgment.winner == winner and judgment.choice == choice


def test_repeated_submit_keeps_the_first_judgment(leased):
    a = leased
    first, created = services.judgment_submit(assignment=a, choice="left")
    again, created_again = services.judgment_submit(assignment=a, choice="right")
    assert created and not created_again
    assert again.id == first.id and again.choice == "left"
    assert Judgment.objects.filter(assignment=a).count() == 1


def test_unknown_choice_is_rejected(leased):
    a = leased
    with pytest.raises(ValueError, match="unknown choice"):
        services.judgment_submit(assignment=a, choice="both")


def test_gold_pair_is_mixed_in_and_wrong_answers_block(users):
    _, alice, _ = users
    study = make_study(n_items=2, overlap=1, raters=[alice])
    finish_generations(study)
    gold = make_gold(study, rate=1.0, block_after=1)
    first = services.assignment_next(study=study, rater=alice)
    assert first.pair_id == gold.id, "gold rate 1 must hand out the gold pair first"
    wrong = "right" if first.a_on_left else "left"
    judgment, _ = services.judgment_submit(assignment=first, choice=wrong)
    assert judgment.gold_correct is False
    enrolment = Enrolment.objects.get(study=study, rater=alice)
    assert enrolment.gold_failures == 1 and enrolment.blocked_at is not None
    nxt = services.assignment_next(study=study, rater=alice)
    with pytest.raises(services.JudgmentRejected, match="ended"):
        services.judgment_submit(assignment=nxt, choice="tie")


def test_gold_pair_does_not_count_towards_overlap_or_cap(users):
    _, alice, bob = users
    study = make_study(n_items=1, overlap=1, raters=[alice, bob])
    finish_generations(study)
    gold = make_gold(study, rate=1.0, block_after=0)
    for rater in (alice, bob):
        a = services.assignment_next(study=study, rater=rater)
        assert a.pair_id == gold.id
        correct = "left" if a.a_on_left else "right"
        judgment, _ = services.judgment_submit(assignment=a, choice=correct)
        assert judgment.gold_correct is True


def test_min_response_time_is_enforced_on_the_server(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    Study.objects.filter(id=study.id).update(min_response_ms=60_000)
    study.refresh_from_db()
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    with pytest.raises(services.JudgmentRejected, match="quick"):
        services.judgment_submit(assignment=a, choice="left", time_on_task_ms=999_999)
    Assignment.objects.filter(id=a.id).update(created_at=timezone.now() - timedelta(minutes=2))
    a.refresh_from_db()
    assert services.judgment_submit(assignment=a, choice="left")[1]


def test_both_bad_is_a_tie_for_the_analysis(leased):
    a = leased
    judgment, _ = services.judgment_submit(assignment=a, choice="both_bad", rationale=" meh ")
    assert (judgment.winner, judgment.both_bad, judgment.rationale) == ("tie", True, "meh")


def test_rationale_is_length_capped(leased):
    a = leased
    with pytest.raises(ValueError, match="rationale"):
        services.judgment_submit(assignment=a, choice="tie", rationale="x" * 1001)


def test_criterion_ratings_are_stored_in_condition_order(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    criterion = study.criteria.create(name="readability", question="How readable?")
    finish_generations(study)
    a = services.assignment_next(study=study, rater=alice)
    Assignment.objects.filter(id=a.id).update(a_on_left=False)
    a.refresh_from_db()
    judgment, _ = services.judgment_submit(
        assignment=a, choice="left", ratings={criterion.id: (5, 2)}
    )
    rating = judgment.ratings.get()
    assert (rating.value_a, rating.value_b) == (2, 5), "left was B, so a=right value"
    with pytest.raises(ValueError, match="bad rating"):
        b = services.assignment_next(study=study, rater=alice)
        services.judgment_submit(assignment=b, choice="left", ratings={criterion.id: (6, 1)})


@pytest.mark.parametrize("refusal", list(REFUSALS), ids=lambda r: r.name)
def test_judgment_submit_refuses_what_the_one_rule_refuses(leased, refusal):
    enrolment = refused(leased, refusal)
    study = leased.pair.study
    assert services.judging_refusal(study=study, enrolment=enrolment) is refusal
    with pytest.raises(services.JudgmentRejected, match=refusal.value[:20]):
        services.judgment_submit(assignment=leased, choice="left")
    assert not Judgment.objects.exists()


def test_the_rule_lets_an_open_consented_unblocked_rater_judge_once(leased):
    study = leased.pair.study
    Study.objects.filter(id=study.id).update(consent_text="We record your choices.")
    study.refresh_from_db()
    assert services.judging_refusal(study=study, enrolment=None) is services.Refusal.NO_CONSENT
    enrolment = services.enrolment_get(study=study, rater=leased.rater)
    services.enrolment_consent(enrolment=enrolment, profile={})
    enrolment.refresh_from_db()
    assert services.judging_refusal(study=study, enrolment=enrolment, assignment=leased) is None
    services.judgment_submit(assignment=leased, choice="left", enrolment=enrolment)
    leased = Assignment.objects.select_related("judgment").get(id=leased.id)
    assert services.judging_refusal(
        study=study, enrolment=enrolment, assignment=leased
    ) is services.Refusal.JUDGED
    Study.objects.filter(id=study.id).update(status=Study.Status.CLOSED)
    study.refresh_from_db()
    assert services.judging_refusal(study=study, enrolment=enrolment) is services.Refusal.STOPPED
