"""Malformed and oversized input: a clear 4xx or message, never a 500 or a traceback, and
nothing half-written (row counts are compared before and after)."""

from __future__ import annotations

import random

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from analysis.__main__ import main as analysis_main
from annotations.models import (
    Assignment,
    Condition,
    CriterionRating,
    Enrolment,
    Invite,
    Item,
    Judgment,
    Problem,
    Study,
)
from tests.security.conftest import client_for

pytestmark = pytest.mark.django_db

MEGABYTE = 1024 * 1024


def counts() -> dict[str, int]:
    models = (get_user_model(), Study, Condition, Item, Enrolment, Invite, Assignment,
              Judgment, CriterionRating, Problem)
    return {model.__name__: model.objects.count() for model in models}


@pytest.fixture
def judging(world):
    """Rater A, logged in, with a criterion to rate and an open assignment."""
    criterion = world.study.criteria.create(name="correct", question="Correct?")
    return client_for(world.rater_a), world.assignment_a, criterion, world


def _judge(client, assignment_id, data, htmx=False):
    url = f"/assignments/{assignment_id}/judge/"
    return client.post(url, data, **({"HTTP_HX_REQUEST": "true"} if htmx else {}))


@pytest.mark.parametrize(
    ("data", "htmx", "status", "message"),
    [
        ({}, False, 400, "Choose left, right, tie or both bad"),
        ({"choice": "LEFT; DROP TABLE"}, False, 400, "Choose left, right, tie or both bad"),
        ({"choice": ""}, True, 200, "Choose left, right, tie or both bad"),
        ({"choice": "left", "C_left": "9", "C_right": "1"}, True, 200, "Select a valid choice"),
        ({"choice": "left", "C_left": "-1", "C_right": "0"}, True, 200, "Select a valid choice"),
        ({"choice": "left", "C_left": "abc", "C_right": "2.5"}, True, 200,
         "Select a valid choice"),
        ({"choice": "left", "C_left": "3"}, True, 200, "for both responses"),
        ({"choice": "tie", "C_left": "3", "C_right": "3", "rationale": "x" * MEGABYTE}, True,
         200, "at most 1000 characters"),
    ],
    ids=["missing", "garbage-choice", "empty-choice-htmx", "rating-too-high",
         "rating-negative", "rating-not-a-number", "rating-one-side", "1MB-rationale"],
)
def test_bad_judgments_are_refused_clearly_and_store_nothing(judging, data, htmx, status,
                                                             message):
    client, assignment, criterion, _ = judging
    data = {key.replace("C_", f"c{criterion.id}_"): value for key, value in data.items()}
    before = counts()
    response = _judge(client, assignment.id, data, htmx)
    assert response.status_code == status, response.content[:300]
    assert message in response.content.decode()
    assert counts() == before, "a refused judgment wrote rows"


def test_a_body_over_the_upload_limit_is_a_400(judging, settings):
    client, assignment, criterion, _ = judging
    before = counts()
    response = _judge(client, assignment.id, {
        "choice": "tie", f"c{criterion.id}_left": "3", f"c{criterion.id}_right": "3",
        "rationale": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    assert response.status_code == 400
    assert counts() == before


@pytest.mark.parametrize("path", [
    "/assignments/abc/judge/",
    "/assignments/-1/judge/",
    "/assignments/99999999999999999999999999/judge/",
    "/assignments/1.5/judge/",
])
def test_non_integer_and_unknown_assignment_ids_are_404(judging, path):
    client, *_ = judging
    before = counts()
    assert client.post(path, {"choice": "left"}).status_code == 404
    assert counts() == before


def test_another_raters_assignment_is_404_and_stays_unjudged(judging):
    client, _, criterion, world = judging
    before = counts()
    response = _judge(client, world.assignment_b.id, {
        "choice": "left", f"c{criterion.id}_left": "3", f"c{criterion.id}_right": "3"})
    assert response.status_code == 404
    assert counts() == before


def test_ratings_for_another_studys_criterion_are_ignored(judging):
    client, assignment, criterion, world = judging
    foreign = world.study_only_b.criteria.create(name="foreign", question="Foreign?")
    response = _judge(client, assignment.id, {
        "choice": "left", f"c{criterion.id}_left": "3", f"c{criterion.id}_right": "3",
        f"c{foreign.id}_left": "1", f"c{foreign.id}_right": "1", "time_on_task_ms": "1e99"})
    assert response.status_code == 302
    judgment = Judgment.objects.get(assignment=assignment)
    assert list(judgment.ratings.values_list("criterion_id", flat=True)) == [criterion.id]
    assert judgment.time_on_task_ms is None, "a garbage timer was stored"


SETUP = {
    "name": "Malformed", "pair_design": "all_pairs", "overlap": "2", "gold_rate": "0",
    "gold_block_after": "2", "min_response_ms": "0", "lease_minutes": "30",
    "max_new_tokens": "128", "item_count": "1", "seed": "0", "prompts": "Write fizzbuzz.",
    "conditions": 'dense = {"kind": "dense"}\nstatic = {"kind": "static", "threshold": 0.05}',
}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"conditions": "a = " + "[" * 100_000 + "\nb = {}"}, "nested too deeply"),
        ({"conditions": 'a = {"kind": "static", "threshold": 1e999}\nb = {"kind": "dense"}'},
         "finite number"),
        ({"conditions": 'a = {"kind": "static", "threshold": NaN}\nb = {"kind": "dense"}'},
         "finite number"),
        ({"conditions": "a = \x01\x02\nb = {"}, "not valid JSON"),
        ({"conditions": "a = \x00\nb = {}"}, "Null characters are not allowed"),
        ({"name": "n" * 5000}, "at most 200 characters"),
        ({"overlap": "many"}, "Enter a whole number"),
        ({"gold_rate": "1e308"}, "between 0 and 1"),
        ({"completion_url": "javascript:alert(1)"}, "Enter a valid URL"),
        ({"temperature": "inf", "samples_per_item": "2"}, "Enter a number"),
        # Every number of the design is bounded (SQLite stored up to 2^63 - 1).
        ({"lease_minutes": str(10**13)}, "less than or equal to 1440"),
        ({"gold_block_after": "70000"}, "less than or equal to 1000"),
        ({"overlap": "40000"}, "less than or equal to 100"),
        ({"max_new_tokens": "0"}, "greater than or equal to 1"),
        ({"max_new_tokens": str(2**40)}, "less than or equal to 32768"),
        ({"items_per_rater": "0"}, "greater than or equal to 1"),
        ({"min_response_ms": str(10**12)}, "less than or equal to 600000"),
        ({"min_judgments": str(2**63)}, "less than or equal to 100000"),
        ({"samples_per_item": "5000", "temperature": "1"}, "less than or equal to 1000"),
        ({"temperature": "1e300", "samples_per_item": "2"}, "less than or equal to 10.0"),
        ({"seed": str(2**70)}, "less than or equal to 4294967295"),
        ({"item_count": "9" * 30}, "less than or equal to 5000"),
        # Policy JSON: types checked before any use (a string was multiplied by 100).
        ({"conditions": 'a = {"kind": "calibrated", "target_sparsity": "0.5"}\nb = {"kind": '
                        '"dense"}'}, "target_sparsity must be a finite number, not text"),
        ({"conditions": 'a = {"kind": "calibrated", "target_sparsity": [0.5]}\nb = {"kind": '
                        '"dense"}'}, "target_sparsity must be a finite number, not a list"),
        ({"conditions": 'a = {"kind": "calibrated", "target_sparsity": true}\nb = {"kind": '
                        '"dense"}'}, "target_sparsity must be a finite number, not true/false"),
        ({"conditions": 'a = {"kind": "calibrated", "target_sparsity": 0.5, "site": [1]}\nb = '
                        '{"kind": "dense"}'}, "site must be a finite number, not a list"),
        ({"built": ['{"name": "x", "policy": {"kind": "static"}, "target_sparsity": [1]}',
                    '{"name": "d", "policy": {"kind": "dense"}}']},
         "Built condition 1: target sparsity must be a finite number, not a list"),
        ({"built": ['{"name": "x", "policy": {"kind": "static", "threshold": {"a": 1}}}',
                    '{"name": "d", "policy": {"kind": "dense"}}']},
         "Built condition 1: threshold must be a finite number, not an object"),
        ({"built": ['{"name": ["x"], "policy": {"kind": "dense"}}']},
         "Built condition 1: name must be text, not a list"),
        # A prompts box of separators alone holds no prompt (it made one: "---\n---").
        ({"prompts": "---\n---"}, "holds only separators"),
        ({"prompts": " --- \r\n\r\n---\r\n"}, "holds only separators"),
    ],
    ids=["deep-json", "infinite-threshold", "nan-threshold", "binary-json", "nul", "long-name",
         "word-overlap", "huge-gold-rate", "javascript-url", "infinite-temperature",
         "huge-lease", "gold-block-past-small-int", "huge-overlap", "no-new-tokens",
         "huge-new-tokens", "no-pairs-per-rater", "huge-min-response", "huge-min-judgments",
         "huge-samples", "huge-temperature", "huge-seed", "huge-item-count",
         "string-target", "list-target", "bool-target", "list-site", "built-list-target",
         "built-object-threshold", "built-list-name", "only-separators",
         "only-separators-crlf"],
)
def test_bad_study_setups_are_form_errors(world, changes, message):
    client = client_for(world.staff)
    before = counts()
    response = client.post(reverse("study_new"), {**SETUP, **changes})
    assert response.status_code == 200, response.status_code
    assert message in response.content.decode()
    assert counts() == before, "a refused setup wrote rows"


def test_a_megabyte_string_target_sparsity_is_a_short_form_error(world):
    """It was multiplied by 100: a 2 MB post made a 402 MB answer and a 2.1 GB process."""
    target = "5" * 2_000_000
    response = client_for(world.staff).post(reverse("study_new"), {
        **SETUP,
        "conditions": f'a = {{"kind": "calibrated", "target_sparsity": "{target}"}}\n'
                      'b = {"kind": "dense"}'})
    assert response.status_code == 200
    assert "target_sparsity must be a finite number, not text" in response.content.decode()
    # The box is shown again as typed (once); nothing more of it.
    assert len(response.content) < 3 * len(target)


def test_a_separator_line_splits_prompts_with_blanks_around_it(world):
    response = client_for(world.staff).post(
        reverse("study_new"), {**SETUP, "prompts": "Write fizzbuzz.\n  ---  \nSort a list.\n"})
    assert response.status_code == 302, response.content.decode()[:2000]
    study = Study.objects.get(name=SETUP["name"])
    assert sorted(study.items.values_list("prompt", flat=True)) == [
        "Sort a list.", "Write fizzbuzz."]


def test_a_setup_over_the_upload_limit_is_a_400(world, settings):
    before = counts()
    response = client_for(world.staff).post(
        reverse("study_new"),
        {**SETUP, "description": "d" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)},
    )
    assert response.status_code == 400
    assert counts() == before


@pytest.mark.parametrize("query", [
    {"PROLIFIC_PID": "x" * 10_000},
    {"PROLIFIC_PID": "abc\n"},
    {"PROLIFIC_PID": "abc", "STUDY_ID": "\x00"},
    {"PROLIFIC_PID": "ab c"},
    {"PROLIFIC_PID": "../../etc/passwd"},
    {"PROLIFIC_PID": "пид"},
    {"STUDY_ID": "only-a-study"},
])
def test_garbage_prolific_links_change_nothing(world, query):
    before = counts()
    response = client_for().get(reverse("prolific_entry", args=[world.study.id]), query)
    assert response.status_code == 400 and b"This link does not work" in response.content
    assert counts() == before


@pytest.mark.parametrize("path", [
    "/p/abc/?PROLIFIC_PID=abc", "/p/99999999999999999999999/?PROLIFIC_PID=abc",
    "/invite/" + "t" * 10_000 + "/", "/invite/%00/", "/invite/..%2F..%2F/", "/invite/ü/",
])
def test_garbage_entry_paths_are_404(world, path):
    before = counts()
    assert client_for().get(path).status_code == 404
    assert counts() == before


@pytest.mark.parametrize(
    ("content", "command", "message"),
    [
        (random.Random(1).randbytes(3000), "agreement", "not UTF-8 text"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "preference", "not UTF-8 text"),
        ("unit,rater,value\n".encode("utf-16"), "agreement", "not UTF-8 text"),
        (b"unit,rater,value\nu,a," + b"9" * 200_000 + b"\n", "agreement", "field larger"),
        (b"unit,rater,value\n", "agreement", "no rows"),
        (b"unit,rater\nu,a\n", "agreement", "missing column(s) value"),
        (b"item,rater,condition_a,condition_b,winner\n1,2,3,4,5\n", "preference",
         "winner must be a, b or tie"),
        (b"item,rater,condition_a,condition_b,winner\nq,r,x,x,a\n", "preference",
         "same as condition_a"),
        (b"unit,rater,value\nu,a,1e999\nu,b,1\n", "agreement", "not a finite number"),
    ],
    ids=["random-bytes", "png", "utf-16", "huge-field", "header-only", "missing-column",
         "numbers-for-names", "one-condition", "infinite-value"],
)
def test_analysis_cli_rejects_malformed_csv_in_one_line(tmp_path, capsys, content, command,
                                                        message):
    path = tmp_path / "input.csv"
    path.write_bytes(content)
    extra = ["--level", "interval"] if command == "agreement" else []
    assert analysis_main([command, str(path), *extra, "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_analysis_cli_on_a_folder_is_a_message(tmp_path, capsys):
    assert analysis_main(["preference", str(tmp_path)]) == 2
    assert "Is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kind", "content"),
    [("mbpp-sanitized", random.Random(2).randbytes(2000)),
     ("mbpp-sanitized", b"[" * 100_000),
     ("jsonl", b"[" * 100_000 + b"\n")],
    ids=["sanitized-binary", "sanitized-deep-json", "jsonl-deep-json"],
)
def test_dataset_import_rejects_junk_whole(db, tmp_path, kind, content):
    """What tests/evaluation/test_datasets.py does not cover: binary and deeply nested
    files for the formats read whole and line by line."""
    path = tmp_path / "junk.json"
    path.write_bytes(content)
    extra = ["--name", "junk"] if kind == "jsonl" else []
    before = counts()
    with pytest.raises(CommandError, match="nothing imported"):
        call_command("import_dataset", kind, "--path", str(path), *extra)
    assert counts() == before
