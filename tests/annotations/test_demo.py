"""The demo study `make run` seeds (annotations/demo.py, manage.py seed_demo): dense against a
small two-family sweep on HumanEval and MBPP, calibrated by the worker."""

import pytest
from django.core.management import call_command

from annotations.demo import DEMO_STUDY_NAME, demo_conditions, demo_seed
from annotations.models import Calibration, Generation, Study

pytestmark = pytest.mark.django_db


def test_the_demo_is_dense_and_a_sweep_on_humaneval_and_mbpp():
    study = demo_seed(n_items=6, max_new_tokens=16)
    names = list(study.conditions.values_list("name", flat=True))
    assert names == [c.name for c in demo_conditions()]
    assert names[0] == "dense" and len(names) == 5
    assert {i.dataset for i in study.items.all()} == {"humaneval", "mbpp"}
    assert study.items.count() == 6 and study.pair_design == "vs_first"
    targets = sorted(
        (c.condition.policy.get("site", "h"), c.target_sparsity)
        for c in Calibration.objects.filter(condition__study=study).select_related("condition")
    )
    assert targets == [("h", 0.25), ("h", 0.5), ("input", 0.25), ("input", 0.5)]
    again = demo_seed(n_items=6, max_new_tokens=16)
    assert again.id == study.id and again.conditions.count() == 5, "a second seed adds nothing"


def test_seed_demo_sends_the_calibration_and_only_the_ready_generations(capsys):
    call_command("seed_demo", "--items", "2", "--max-new-tokens", "16")
    study = Study.objects.get(name=DEMO_STUDY_NAME)
    out = capsys.readouterr().out
    assert "calibration of the sweep sent first" in out
    # Only dense is ready; the sweep's generations come when its calibration is done.
    assert set(Generation.objects.filter(item__study=study)
               .values_list("condition__name", flat=True)) == {"dense"}
