"""The demo study `make run` seeds (annotations/demo.py, manage.py seed_demo): dense against a
small two-family sweep on HumanEval and MBPP, calibrated by the worker."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from annotations import services
from annotations.demo import DEMO_STUDY_NAME, demo_conditions, demo_seed
from annotations.models import Calibration, Generation, Study
from evaluation.sandbox.outcomes import ExecutionResult

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
    # The README's count: every output, those waiting for the calibration included.
    assert "10 outputs, 8 of them once the sweep is calibrated; 2 generations created" in out
    # Only dense is ready; the sweep's generations come when its calibration is done.
    assert set(Generation.objects.filter(item__study=study)
               .values_list("condition__name", flat=True)) == {"dense"}


def _seed_again(capsys) -> str:
    call_command("seed_demo", "--items", "2", "--max-new-tokens", "16")
    return capsys.readouterr().out.splitlines()[0]


def test_a_restart_says_what_the_worker_was_given_not_that_it_is_generating(capsys):
    """`make run` prints seed_demo's first line as its banner; on a restart it must say
    what is left, not claim the worker is generating."""
    call_command("seed_demo", "--items", "2", "--max-new-tokens", "16")
    study = Study.objects.get(name=DEMO_STUDY_NAME)
    capsys.readouterr()
    # An earlier run: the sweep's calibration failed, dense's two outputs are stored.
    Calibration.objects.filter(condition__study=study).update(status=Calibration.Status.FAILED)
    rows = Generation.objects.filter(item__study=study)
    rows.update(status=Generation.Status.DONE, text="def f(): pass")
    assert _seed_again(capsys).endswith(
        "0 generations created, 2 Pass@1 checks sent to the worker."
    ), "finished outputs whose checks never ran are checked"
    for row in rows:  # the worker ran them
        services.execution_record(
            generation=row, code="", result=ExecutionResult("passed", 0, "", "", 0.1)
        )
    assert _seed_again(capsys).endswith(
        "0 generations created, nothing to generate: its 2 outputs are done."
    )
    # Killed hard mid-output: the row stays leased to the dead worker until the lease ends.
    held = rows.first()
    held.execution.delete()
    Generation.objects.filter(id=held.id).update(
        status=Generation.Status.RUNNING, lease_until=timezone.now() + timedelta(minutes=5)
    )
    assert _seed_again(capsys).endswith(
        "nothing sent now: 1 output still leased by an earlier run's worker, taken over when "
        "the lease ends."
    )
