"""The model registry's rows (annotations/models.py: `ModelEntry`, `Condition.model`,
the alignment-vector fields): what the database refuses and which queue a condition uses."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from annotations.models import (
    Condition,
    ModelEntry,
    validate_model_description,
    validate_model_key,
)
from annotations.queues import generation_queue, worker_queues
from tests.annotations.conftest import make_study

pytestmark = pytest.mark.django_db

DESCRIPTION = {
    "kind": "hf-directory", "architecture": "llama",
    "shape": {"hidden_size": 64, "num_hidden_layers": 2}, "context_length": 2048,
    "weight_formats": ["F32"], "parameters": 1000, "fingerprint": "abc123",
}


def test_a_condition_without_a_model_means_the_default_model_on_the_old_queue():
    condition = make_study(n_items=0).conditions.first()
    assert condition.model is None
    assert condition.model_key == "default"
    assert condition.queue == "generation"


def test_a_registered_models_condition_goes_to_its_own_queue():
    entry = ModelEntry.objects.create(key="smol-dpo", path="/models/dpo")
    condition = make_study(n_items=0).conditions.first()
    Condition.objects.filter(id=condition.id).update(model=entry)
    condition.refresh_from_db()
    assert condition.model_key == "smol-dpo"
    assert condition.queue == "generation.smol-dpo" == entry.queue == generation_queue("smol-dpo")


def test_an_alignment_vector_needs_both_the_aligned_model_and_lambda():
    aligned = ModelEntry.objects.create(key="aligned", path="/models/aligned")
    study = make_study(n_items=0, conditions=[("dense", {"kind": "dense"})])
    with pytest.raises(IntegrityError), transaction.atomic():
        Condition.objects.create(study=study, name="x", policy={"kind": "dense"},
                                 aligned_model=aligned)
    with pytest.raises(IntegrityError), transaction.atomic():
        Condition.objects.create(study=study, name="y", policy={"kind": "dense"},
                                 alignment_lambda=0.5)
    Condition.objects.create(study=study, name="z", policy={"kind": "dense"},
                             aligned_model=aligned, alignment_lambda=0.5)


def test_a_model_that_conditions_use_cannot_be_deleted():
    entry = ModelEntry.objects.create(key="m", path="/m")
    study = make_study(n_items=0, conditions=[("dense", {"kind": "dense"})])
    study.conditions.update(model=entry)
    with pytest.raises(Exception, match="protected"):
        entry.delete()


@pytest.mark.parametrize("key", ["default", "Upper", "9lives", "has space", "a" * 33, ""])
def test_a_bad_key_is_refused(key):
    with pytest.raises(ValidationError):
        validate_model_key(key)


def test_the_database_refuses_the_reserved_key():
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelEntry.objects.create(key="default", path="/m")


def test_a_description_is_empty_or_complete_and_typed():
    validate_model_description({})
    validate_model_description(DESCRIPTION)
    with pytest.raises(ValidationError, match="lacks fingerprint"):
        validate_model_description({k: v for k, v in DESCRIPTION.items() if k != "fingerprint"})
    with pytest.raises(ValidationError, match="context_length is not a int"):
        validate_model_description({**DESCRIPTION, "context_length": "2048"})
    with pytest.raises(ValidationError, match="non-positive"):
        validate_model_description({**DESCRIPTION, "shape": {"hidden_size": 0}})
    entry = ModelEntry(key="m", path="/m", description={"kind": 1})
    with pytest.raises(ValidationError):
        entry.full_clean()


def test_a_workers_generation_queues_are_its_models():
    assert worker_queues(["generation", "execution"], ["default"]) == ["generation", "execution"]
    assert worker_queues(["generation"], ["a", "default"]) == ["generation.a", "generation"]
    assert worker_queues(["generation", "judge"], ["a", "b"]) == [
        "generation.a", "generation.b", "judge"
    ]
    assert worker_queues(["execution"], ["a"]) == ["execution"], "not a model worker"
