"""DS-1000 in a study end to end: a DS-1000-format file (numpy, pandas and matplotlib
problems) imported with `import_dataset`, a study drawn from it on the setup page, its
reference solutions passing in the sandbox and wrong ones failing, and (worker) the real
model's answers generated, scored and reported per condition, with the long prompts'
prefill speed apart from decode."""

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from annotations import services, tasks
from annotations.models import Execution, Generation, Problem, Study
from evaluation.code_extraction import extract_answer_code
from evaluation.prompts import DS1000_INSTRUCTION
from evaluation.sandbox.checks import check_candidate
from reports.build import render_report_html, study_report
from tests.support.ds1000 import WRONG_SOLUTIONS, write_ds1000
from tests.support.worker import celery_worker, wait_for

STUDY = {
    "name": "DS-1000 dense vs static",
    "pair_design": "vs_first",
    "overlap": "1",
    "gold_rate": "0",
    "gold_block_after": "2",
    "min_response_ms": "0",
    "lease_minutes": "30",
    "max_new_tokens": "4",
    "datasets": "ds1000",
    "item_count": "3",
    "seed": "0",
    "conditions": 'dense = {"kind": "dense"}\nstatic = {"kind": "static", "threshold": 0.1}',
    "criteria": "correctness | Which answer solves the problem?",
}


def _ds1000_study(tmp_path) -> Study:
    """Import the file with the command and build the study on the setup page."""
    write_ds1000(tmp_path / "ds1000.jsonl")
    call_command("import_dataset", "ds1000", "--path", str(tmp_path / "ds1000.jsonl"),
                 verbosity=0)
    staff = get_user_model().objects.create_user("staff", password="pw-staff-1", is_staff=True)
    client = Client()
    client.force_login(staff)
    response = client.post(reverse("study_new"), STUDY)
    assert response.status_code == 302, response.content.decode()[:2000]
    return Study.objects.get(name=STUDY["name"])


@pytest.mark.django_db
def test_imported_ds1000_items_pass_with_their_references_and_fail_with_wrong_answers(
    tmp_path,
):
    study = _ds1000_study(tmp_path)
    assert Problem.objects.filter(dataset="ds1000", unavailable_reason="").count() == 3
    items = list(study.items.select_related("problem").order_by("task_id"))
    assert [i.problem.metadata["library"] for i in items] == ["Numpy", "Pandas", "Matplotlib"]
    for item in items:
        assert item.prompt.startswith(DS1000_INSTRUCTION) and item.problem.prompt in item.prompt
        task = item.problem.as_task()
        # As a chat model answers: the code fenced, prose around it.
        answer = f"Here is the code:\n```python\n{task.reference}```\nIt stores the result."
        passed = check_candidate(task, extract_answer_code(task, answer))
        assert passed.status == "passed", (item.task_id, passed.stderr[-1500:])
        wrong = WRONG_SOLUTIONS[item.problem.metadata["library"]]
        failed = check_candidate(task, extract_answer_code(task, wrong))
        assert failed.status == "failed", (item.task_id, failed.stderr[-1500:])


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_ds1000_study_is_generated_scored_and_reported_per_condition(tmp_path):
    study = _ds1000_study(tmp_path)
    assert services.generations_create(study=study) == 0, "the setup page made them"
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path) as worker:
        assert tasks.generations_enqueue(study=study) == 6
        wait_for(
            lambda: not Generation.objects.filter(
                item__study=study, status__in=["pending", "running"]
            ).exists(),
            timeout_s=450, what="the six generations", log_path=log_path, process=worker,
        )
        wait_for(lambda: Execution.objects.filter(generation__item__study=study).count() == 6,
                 timeout_s=120, what="the six Pass@1 checks", log_path=log_path,
                 process=worker)
    report = study_report(study, bootstrap=0)
    rows = {r["condition"]: r for r in report.summary["conditions"]}
    for name in ("dense", "static"):
        row = rows[name]
        assert row["n_checked"] == 3 and row["pass_at_1"] is not None, row
        assert row["n_passed"] == sum(
            g["passed"] for g in report.generations if g["condition"] == name
        )
        assert row["prefill_tokens_per_s"] > 0 and row["decode_tokens_per_s"] > 0
    for g in report.generations:
        assert g["status"] == "done" and g["prompt_tokens"] > 100  # DS-1000's long prompts
        # The pooled figure is neither: the prompt's speed and the steps' are apart.
        assert g["prefill_tokens_per_s"] > 0 and g["decode_tokens_per_s"] > 0
        assert g["tokens_per_s"] != pytest.approx(g["decode_tokens_per_s"])
    html = render_report_html(report)
    assert "Prefill tok/s" in html and "Decode tok/s" in html
