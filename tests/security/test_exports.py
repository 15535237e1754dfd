"""Every file the app exports: CSV cells a spreadsheet would run are neutralized, JSON and
JSONL parse whatever the model wrote, and no export names a rater."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.urls import reverse

from analysis.export import FORMULA_STARTS
from annotations import services
from annotations.models import Condition, Enrolment, Generation, Item, Judgment, Study
from reports.build import REPORT_FILES
from tests.security.conftest import PASSWORD, client_for

pytestmark = pytest.mark.django_db

FORMULAS = ["=1+1", "+SUM(A1)", "-2+3", "@SUM(A1)", "\t=cmd|' /C calc'!A0", "\r=2+5",
            '=HYPERLINK("http://evil.example")']
# Text a JSON line must survive: Unicode line and paragraph separators, quotes, CRLF.
AWKWARD = 'a\u2028b\u2029c\x85d "quoted" \\ backslash\r\nnext'
PID = "5f1a2b3c4d5e6f7a8b9c0d1e"


@pytest.fixture
def exported(db, monkeypatch):
    """A judged study whose condition names, task ids, prompts and outputs start like
    formulas; one rater came from Prolific, one has a password account."""
    monkeypatch.setattr("reports.build.REPORT_BOOTSTRAP", 0)
    User = get_user_model()
    staff = User.objects.create_superuser("staff-export", password=PASSWORD)
    named = User.objects.create_user("jane.doe@example.org", password=PASSWORD)
    study = Study.objects.create(name="=exported", status=Study.Status.OPEN, overlap=2)
    for position, name in enumerate(FORMULAS[:3]):
        policy = {"kind": "dense"} if position == 0 else {"kind": "static",
                                                          "threshold": 0.05 * position}
        Condition.objects.create(study=study, name=name, policy=policy, position=position)
    for task_id in FORMULAS[3:5]:
        Item.objects.create(study=study, dataset="humaneval", task_id=task_id, prompt=FORMULAS[6])
    services.generations_create(study=study)
    for i, generation in enumerate(Generation.objects.filter(item__study=study).order_by("id")):
        generation.status = Generation.Status.DONE
        generation.text = FORMULAS[len(FORMULAS) - 1 - i] + (AWKWARD if i % 2 else "")
        generation.active_fraction = 1.0
        generation.save()
    for item in study.items.all():
        services.pairs_create(item=item)
    prolific = services.prolific_rater_get(study=study, prolific_pid=PID,
                                           prolific_study_id="STUDY1", session_id="SESSION1")
    services.enrolment_get(study=study, rater=named)
    for rater in (prolific, named):
        while (assignment := services.assignment_next(study=study, rater=rater)) is not None:
            services.judgment_submit(assignment=assignment, choice="left",
                                     rationale=FORMULAS[0])
    return staff, study, [prolific, named]


def _csv_cells(name: str, content: bytes) -> list[tuple[str, str]]:
    rows = list(csv.reader(io.StringIO(content.decode(), newline="")))
    return [(f"{name} row {r} col {c}", cell) for r, row in enumerate(rows, start=1)
            for c, cell in enumerate(row, start=1)]


def _all_exports(client, study, tmp_path) -> dict[str, bytes]:
    """Every report file from the page, the zip and the command, and the JSONL export."""
    files = {}
    for name in REPORT_FILES:
        response = client.get(reverse("study_report_file", args=[study.id, name]))
        assert response.status_code == 200, f"{name}: {response.status_code}"
        files[f"page/{name}"] = response.content
    archive = client.get(reverse("study_report_file", args=[study.id, "report.zip"])).content
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        files.update({f"zip/{name}": zipped.read(name) for name in zipped.namelist()})
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    files.update({f"command/{p.name}": p.read_bytes() for p in tmp_path.iterdir()})
    response = client.get(reverse("export_preferences", args=[study.id]))
    files["preferences.jsonl"] = b"".join(response.streaming_content)
    return files


def _formula_problems(files: dict[str, bytes]) -> list[str]:
    csvs = {name: content for name, content in files.items() if name.endswith(".csv")}
    for source in ("page", "zip", "command"):
        for name in ("judgments.csv", "generations.csv"):
            rows = csvs[f"{source}/{name}"].decode().count("\n")
            assert rows > 1, f"{source}/{name} has no data rows: the test would check nothing"
    cells = [cell for name, content in csvs.items() for cell in _csv_cells(name, content)]
    problems = [f"{where}: {cell!r} would run in a spreadsheet"
                for where, cell in cells if cell.startswith(FORMULA_STARTS)]
    texts = {cell for _, cell in cells}
    problems += [f"{formula!r} did not come through as text" for formula in FORMULAS
                 if not any(text.startswith("'" + formula) for text in texts)]
    return problems


def _jsonl_problems(text: str) -> list[str]:
    lines = text.splitlines()  # splits on U+2028 / U+0085 too, as many readers do
    decisive = Judgment.objects.filter(winner__in=["a", "b"]).count()
    if not decisive or len(lines) != decisive or text.count("\n") != decisive:
        return [f"{len(lines)} lines for {decisive} preference judgments: "
                "a record broke across lines"]
    records = [json.loads(line) for line in lines]
    outputs = {r["chosen"] for r in records} | {r["rejected"] for r in records}
    return [] if any(AWKWARD in o for o in outputs) else ["the awkward output was not exported"]


def test_exports_are_formula_safe_parse_and_name_no_rater(exported, tmp_path):
    """Raters are `rater-1` … in the report files and a number in the JSONL: no username,
    Prolific participant, study or session id leaves the database."""
    staff, study, raters = exported
    files = _all_exports(client_for(staff), study, tmp_path)
    problems = _formula_problems(files)
    for name, content in files.items():
        if name.endswith(".json"):
            json.loads(content)  # raises, naming the position, if it does not parse
    problems += _jsonl_problems(files["preferences.jsonl"].decode())
    enrolment = Enrolment.objects.get(prolific_pid=PID)
    personal = [r.get_username() for r in raters] + [
        PID, enrolment.prolific_study_id, enrolment.prolific_session_id, "jane.doe"]
    problems += [f"{name} holds personal data {value!r}" for name, content in files.items()
                 for value in personal if value.encode() in content]
    assert {row["rater"] for row in json.loads(files["page/judgments.json"])} == {
        "rater-1", "rater-2"}
    assert not problems, "\n".join(problems)
