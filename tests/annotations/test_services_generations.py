from datetime import timedelta

import pytest
from django.utils import timezone

from annotations import services
from annotations.models import JOB_GAVE_UP, MAX_JOB_ATTEMPTS, Generation
from tests.annotations.conftest import make_study

pytestmark = pytest.mark.django_db


def test_generations_create_makes_item_by_condition_rows_once():
    study = make_study(n_items=3)
    assert services.generations_create(study=study) == 9
    assert services.generations_create(study=study) == 0, "a second call must not add rows"
    assert Generation.objects.filter(item__study=study).count() == 9


def test_claim_is_guarded_and_gives_up_after_max_attempts():
    study = make_study(n_items=1)
    services.generations_create(study=study)
    g = Generation.objects.filter(item__study=study).first()
    assert services.generation_claim(generation_id=g.id) is not None
    assert services.generation_claim(generation_id=g.id) is None, "a held lease was taken twice"
    # The worker died: its lease runs out, another worker may take the job once more.
    Generation.objects.filter(id=g.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert services.generation_claim(generation_id=g.id) is not None
    Generation.objects.filter(id=g.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert services.generation_claim(generation_id=g.id) is None
    g.refresh_from_db()
    assert g.status == Generation.Status.FAILED and g.error == JOB_GAVE_UP
    assert g.attempts == MAX_JOB_ATTEMPTS




def test_several_samples_per_item_get_their_own_seeds():
    study = make_study(n_items=2)
    study.samples_per_item, study.temperature = 3, 0.8
    study.save()
    assert services.generations_create(study=study) == 2 * 3 * 3
    assert services.generations_create(study=study) == 0
    seeds = set(Generation.objects.filter(item__study=study).values_list("sample_index", "seed"))
    assert seeds == {(0, 0), (1, 1), (2, 2)}


def test_several_samples_without_sampling_are_refused_by_the_database():
    from django.db import IntegrityError, transaction

    study = make_study(n_items=1)
    study.samples_per_item = 2
    with pytest.raises(IntegrityError), transaction.atomic():
        study.save()


def test_generation_order_interleaves_conditions_per_item_rotating():
    # (id, item, condition position, sample): 3 items × 3 conditions, created item by item.
    rows = [(10 * item + position, item, position, 0) for item in (7, 8, 9) for position in
            (0, 1, 2)]
    order = services.generation_order(list(reversed(rows)))
    assert order == [70, 71, 72, 81, 82, 80, 92, 90, 91]
    turns = [[i % 10 for i in order[k:k + 3]] for k in (0, 3, 6)]
    assert {t.index(c) for t in turns for c in [0]} == {0, 1, 2}, "each condition runs first once"
    twice = services.generation_order([(1, 5, 0, 0), (2, 5, 1, 0), (3, 5, 0, 1), (4, 5, 1, 1)])
    assert twice == [1, 2, 4, 3], "sample 1 after sample 0, rotated again"
