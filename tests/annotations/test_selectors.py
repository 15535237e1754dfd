"""selectors: rater quality and the judgments that count."""


import pytest

from annotations import selectors, services
from annotations.models import Condition, Generation, ModelEntry
from tests.annotations.conftest import finish_generations, make_gold, make_study

pytestmark = pytest.mark.django_db


def test_rater_quality_scores_gold_accuracy_and_blocking(users):
    from annotations.selectors import rater_quality

    _, alice, bob = users
    study = make_study(n_items=1, overlap=2, raters=[alice, bob])
    finish_generations(study)
    make_gold(study, rate=1.0, block_after=1)
    for rater, correct in ((alice, True), (bob, False)):
        a = services.assignment_next(study=study, rater=rater)
        right_side = "left" if a.a_on_left else "right"
        wrong_side = "right" if a.a_on_left else "left"
        services.judgment_submit(assignment=a, choice=right_side if correct else wrong_side,
                                 time_on_task_ms=4000)
    by_rater = {q.username: q for q in rater_quality(study)}
    assert by_rater["alice"].score == 1.0 and by_rater["alice"].median_time_s == 4.0
    assert by_rater["bob"].blocked and by_rater["bob"].score == 0.0


def test_judgments_for_analysis_leave_out_gold_and_blocked_raters(users):
    _, alice, bob = users
    study = make_study(n_items=1, overlap=2, raters=[alice, bob])
    finish_generations(study)
    make_gold(study, rate=1.0, block_after=1)
    for rater in (alice, bob):
        while (a := services.assignment_next(study=study, rater=rater)) is not None:
            a_side, b_side = ("left", "right") if a.a_on_left else ("right", "left")
            try:  # gold says A wins: alice always picks A, bob always B
                services.judgment_submit(assignment=a, choice=b_side if rater == bob else a_side)
            except services.JudgmentRejected:
                break
    selection = selectors.judgments_for_analysis(study)
    counted = selection.counted
    assert counted.exists()
    assert not counted.filter(assignment__pair__gold__isnull=False).exists()
    assert not counted.filter(assignment__rater=bob).exists()
    assert list(selection.gold.values_list("assignment__rater__username", flat=True)) == [
        "alice"
    ], "the gold accuracy must read the kept raters' checks only"
    assert selection.excluded == [
        selectors.ExcludedRater(rater_id=bob.id, judgments=0, gold_failures=1)
    ], selection.excluded


def test_eta_follows_each_conditions_measured_pace_up_to_now(users):
    """Dense outputs took 10 s, the sparse ones 30 s: after four dense and one sparse, the
    three sparse outputs left take 90 s, not the 45 s that the mean gap between finishes
    gave (the ETA ran low as the slow condition came last)."""
    from datetime import timedelta

    from django.utils import timezone

    from annotations.models import Generation
    from annotations.selectors.staff import _eta_s

    study = make_study(n_items=4, conditions=[("dense", {"kind": "dense"}),
                                              ("sparse", {"kind": "static", "threshold": 0.1})])
    services.generations_create(study=study)
    start = timezone.now() - timedelta(hours=1)
    rows = Generation.objects.filter(item__study=study).order_by("condition__position", "id")
    finished = 0
    for row in list(rows)[:5]:
        latency = 10 if row.condition.name == "dense" else 30
        finished += latency
        Generation.objects.filter(id=row.id).update(
            status="done", latency_s=latency, finished_at=start + timedelta(seconds=finished))
    at = start + timedelta(seconds=70)
    remaining = {study.conditions.get(name="sparse").id: 3}
    assert _eta_s(study, remaining=remaining, now=at) == pytest.approx(90)
    # 30 s later nothing more is done: the current output is slower, so is the estimate.
    later = _eta_s(study, remaining=remaining, now=at + timedelta(seconds=30))
    assert later == pytest.approx(90 * 100 / 70)
    Generation.objects.filter(id=list(rows)[-1].id).update(status="cancelled")
    sparse = selectors.study_progress(study).conditions[1]
    assert (sparse.done, sparse.cancelled, sparse.total) == (1, 1, 4)


def test_condition_models_name_each_conditions_weights_and_their_fingerprint():
    base = ModelEntry.objects.create(key="smol", path="/smol", status="valid",
                                     description={"fingerprint": "f-smol"})
    aligned = ModelEntry.objects.create(key="smol-dpo", path="/dpo", status="valid")
    study = make_study(n_items=1, conditions=[
        ("dense", {"kind": "dense"}), ("base", {"kind": "dense"}), ("half", {"kind": "dense"}),
    ])
    dense, on_base, half = study.conditions.order_by("position")
    Condition.objects.filter(id=on_base.id).update(model=base)
    Condition.objects.filter(id=half.id).update(model=base, aligned_model=aligned,
                                                alignment_lambda=0.5)
    services.generations_create(study=study)
    Generation.objects.filter(condition=half).update(
        status=Generation.Status.DONE, model_fingerprint="f-merged"
    )
    models = selectors.condition_models(study)
    assert (models[dense.id].key, models[dense.id].fingerprint) == ("default", "")
    assert (models[on_base.id].key, models[on_base.id].fingerprint) == ("smol", "f-smol")
    assert models[half.id].key == "smol→smol-dpo@0.5"
    assert (models[half.id].base_key, models[half.id].aligned_key) == ("smol", "smol-dpo")
    assert (models[half.id].alignment_lambda, models[half.id].fingerprint) == (0.5, "f-merged")
    half.refresh_from_db()
    assert selectors.condition_model_key(half) == "smol→smol-dpo@0.5"
