"""A study's numbers are bounded in the database too (annotations/models.py:
`STUDY_NUMBER_BOUNDS`), and a condition's policy edited in the admin is checked like the
setup form's."""

import json

import pytest
from django.db import IntegrityError, transaction

from annotations.admin import ConditionInline
from annotations.models import STUDY_NUMBER_BOUNDS, Study

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", sorted(STUDY_NUMBER_BOUNDS))
def test_the_database_refuses_a_number_past_its_bound(name):
    """SQLite stored any 64-bit value (a lease of 10^13 minutes made every rater request a
    500); the checks hold on every database, whatever writes the row."""
    low, high = STUDY_NUMBER_BOUNDS[name]
    study = Study.objects.create(name="bounded", samples_per_item=1, temperature=1.0)
    for value in (high + 1, low - 1):
        if value < 0 and name != "temperature":
            continue  # a positive integer column refuses it by its own type
        with pytest.raises(IntegrityError), transaction.atomic():
            Study.objects.filter(id=study.id).update(**{name: value})
    Study.objects.filter(id=study.id).update(**{name: high})


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"kind": "calibrated", "target_sparsity": "0.5"}, "must be a number"),
        ({"kind": "static", "threshold": "0.05"}, "must be a number"),
        ({"kind": "static", "threshold": 0.05, "site": 3}, "'site' must be one of"),
        (["static"], "a policy must be a JSON object"),
        ({"kind": "nope"}, "unknown policy kind"),
    ],
)
def test_the_admin_checks_a_conditions_policy(policy, message):
    study = Study.objects.create(name="admin policy")
    form = ConditionInline.form(data={"study": study.id, "name": "c", "position": 0,
                                      "policy": json.dumps(policy)})
    assert not form.is_valid()
    assert message in " ".join(form.errors["policy"])


@pytest.mark.parametrize("policy", [
    {"kind": "static", "threshold": 0.05, "site": "input"},
    {"kind": "static", "site": "input"},  # awaiting its calibration
    {"kind": "calibrated"},
    {"kind": "dense"},
])
def test_the_admin_keeps_good_and_awaiting_policies(policy):
    study = Study.objects.create(name="admin policy")
    form = ConditionInline.form(data={"study": study.id, "name": "c", "position": 0,
                                      "policy": json.dumps(policy)})
    assert form.is_valid(), form.errors
