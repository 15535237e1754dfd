"""The new-study page's condition builder (annotations/views/conditions.py) and the study it
creates: rows instead of JSON, calibrations that block launch until done."""

import html as html_module
import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from annotations import selectors, services
from annotations.models import Calibration, ModelEntry, Study
from tests.annotations.test_setup import BASE

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(users) -> Client:
    client = Client()
    client.force_login(users[0])
    return client


def _rows(html: str) -> list[dict]:
    values = re.findall(r'name="built" value="([^"]*)"', html)
    return [json.loads(html_module.unescape(v)) for v in values]


def test_the_page_offers_every_family_and_starts_with_dense(staff):
    html = staff.get(reverse("study_new")).content.decode()
    for kind in ("dense", "static", "calibrated", "dynamic", "budget", "predictor"):
        assert f'<option value="{kind}"' in html, kind
    assert [r["name"] for r in _rows(html)] == ["dense"]
    assert 'name="p_threshold"' in html, "the default family's fields are on the page"


def test_fields_of_a_family_with_defaults_and_meanings(staff):
    html = staff.get(reverse("condition_fields"), {"b_family": "dynamic"}).content.decode()
    assert 'name="p_entropy_scale"' in html and 'placeholder="default 2.0"' in html
    assert "follows the model" in html, "the family's one-line meaning"
    assert 'name="b_sparsities"' in html, "dynamic can be swept"
    html = staff.get(reverse("condition_fields"), {"b_family": "predictor"}).content.decode()
    assert 'name="b_sparsities"' not in html and 'name="p_predictor"' in html


def test_add_a_condition_and_a_sweep(staff):
    response = staff.post(reverse("condition_add"),
                          {"b_family": "static", "p_threshold": "0.05", "b_name": ""})
    assert response.status_code == 200
    assert "conditions-changed" in response.headers["HX-Trigger-After-Settle"]
    [row] = _rows(response.content.decode())
    assert row["policy"] == {"kind": "static", "threshold": 0.05}
    response = staff.post(reverse("condition_sweep"), {
        "b_family": "calibrated", "b_sparsities": "25, 50", "b_set": "items"})
    rows = _rows(response.content.decode())
    assert [r["target_sparsity"] for r in rows] == [0.25, 0.5]


def test_a_bad_field_is_shown_in_the_builder_not_the_list(staff):
    response = staff.post(reverse("condition_add"), {"b_family": "static", "p_threshold": "x"})
    assert response.headers["HX-Retarget"] == "#builder-error"
    assert "not a number" in response.content.decode() and not _rows(response.content.decode())


def test_the_pair_count_warns_and_shows_the_numbers(staff):
    data = {"built": ["a"] * 9, "pair_design": "all_pairs", "overlap": "3", "datasets": "x",
            "item_count": "20", "prompts": ""}
    html = staff.post(reverse("condition_count"), data).content.decode()
    assert "720 pairs" in html and "2160 judgments" in html and "160 pairs" in html
    assert "alert warning" in html
    html = staff.post(reverse("condition_count"), {**data, "pair_design": "vs_first"}).content
    assert b"alert warning" not in html


def test_create_a_study_from_built_rows_then_launch_waits_for_calibration(staff):
    rows = [
        {"name": "dense", "policy": {"kind": "dense"}},
        {"name": "static 40%", "policy": {"kind": "static"}, "target_sparsity": 0.4,
         "calibration_set": "items"},
        {"name": "static 0%", "policy": {"kind": "static"}, "target_sparsity": 0.0},
    ]
    data = {**BASE, "conditions": "", "prompts": "Write fizzbuzz.",
            "built": [json.dumps(r) for r in rows]}
    response = staff.post(reverse("study_new"), data)
    study = Study.objects.get(name=BASE["name"])
    assert response.status_code == 302
    assert list(study.conditions.values_list("name", flat=True)) == [r["name"] for r in rows]
    assert study.conditions.get(name="static 0%").policy == {"kind": "static", "threshold": 0.0}
    [cal] = Calibration.objects.all()
    assert (cal.condition.name, cal.target_sparsity, cal.status) == ("static 40%", 0.4, "pending")
    assert "still being calibrated" in " ".join(services.study_launch(study=study))
    page = staff.get(reverse("study_setup", args=[study.id])).content.decode()
    assert 'id="calibration"' in page and "every 2s" in page
    assert "calibrated to 40 % sparsity" in page and '{"kind"' not in page
    # The condition waits: no generations for it until its thresholds exist.
    services.generations_create(study=study)
    assert not study.conditions.get(name="static 40%").generations.exists()


def test_tampered_rows_are_refused_with_nothing_created(staff):
    data = {**BASE, "conditions": "", "prompts": "x",
            "built": [json.dumps({"name": "d", "policy": {"kind": "dense"}}),
                      json.dumps({"name": "s", "policy": {"kind": "static", "threshold": -1}})]}
    response = staff.post(reverse("study_new"), data)
    assert response.status_code == 200 and "Built condition 2" in response.content.decode()
    assert not Study.objects.exists()


def test_an_expert_line_may_leave_a_calibrated_policy_to_the_job(staff):
    data = {**BASE, "built": [], "prompts": "x", "conditions":
            'dense = {"kind": "dense"}\ncal = {"kind": "calibrated", "target_sparsity": 0.5}\n'
            'dyn = {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1}'}
    staff.post(reverse("study_new"), data)
    study = Study.objects.get()
    assert Calibration.objects.get().condition.name == "cal"
    state = selectors.calibration_state(study)
    assert state.unfinished == 1 and not state.finished


def test_calibration_progress_stops_polling_when_done(staff):
    data = {**BASE, "built": [], "prompts": "x", "conditions":
            'dense = {"kind": "dense"}\ncal = {"kind": "calibrated", "target_sparsity": 0.5}'}
    staff.post(reverse("study_new"), data)
    study = Study.objects.get()
    url = reverse("study_calibration", args=[study.id])
    assert staff.get(url).status_code == 200
    Calibration.objects.update(status="failed", error="boom")
    response = staff.get(url)
    assert response.status_code == 286 and "boom" in response.content.decode()
    staff.post(reverse("study_calibration_retry", args=[study.id]))
    assert Calibration.objects.get().status == "pending"


def _registered(key: str, *, layers: int = 2, status: str = "valid") -> ModelEntry:
    description = {
        "kind": "hf-directory", "architecture": "llama", "context_length": 256,
        "shape": {"hidden_size": 64, "num_hidden_layers": layers}, "weight_formats": ["F32"],
        "parameters": 1000, "fingerprint": f"fp-{key}",
    }
    return ModelEntry.objects.create(key=key, path=f"/models/{key}", status=status,
                                     description=description if status == "valid" else {})


def test_the_builder_offers_valid_registered_models_and_a_lambda_sweep(staff):
    _registered("smol")
    _registered("smol-dpo")
    _registered("broken", status="invalid")
    html = staff.get(reverse("study_new")).content.decode()
    assert '<option value="default">' in html
    assert '<option value="smol">' in html and '<option value="smol-dpo">' in html
    assert '<option value="broken">' not in html, "only valid models are offered"
    assert 'id="add-lambda-sweep"' in html
    response = staff.post(reverse("condition_add"), {
        "b_family": "static", "p_threshold": "0.05", "b_name": "", "b_model": "smol"})
    [row] = _rows(response.content.decode())
    assert (row["model"], row["aligned"], row["alignment_lambda"]) == ("smol", "", None)
    assert row["name"].endswith("· on smol")
    response = staff.post(reverse("condition_lambda_sweep"), {
        "b_family": "dense", "b_model": "smol", "b_aligned": "smol-dpo",
        "b_lambdas": "1, 0, 0.5"})
    rows = _rows(response.content.decode())
    assert [r["alignment_lambda"] for r in rows] == [0.0, 0.5, 1.0]
    assert {(r["model"], r["aligned"]) for r in rows} == {("smol", "smol-dpo")}
    assert len({r["name"] for r in rows}) == 3


@pytest.mark.parametrize("fields, error", [
    ({"b_model": "broken", "b_aligned": "smol-dpo", "b_lambdas": "0.5"}, "not a valid registered"),
    ({"b_model": "smol", "b_aligned": "deep", "b_lambdas": "0.5"}, "differ in num_hidden_layers"),
    ({"b_model": "smol", "b_aligned": "smol", "b_lambdas": "0.5"}, "two different models"),
    ({"b_model": "smol", "b_aligned": "smol-dpo", "b_lambdas": "x"}, "not a number"),
    ({"b_model": "smol", "b_lambdas": "0.5"}, "needs an aligned model"),
])
def test_a_bad_model_choice_is_a_builder_error(staff, fields, error):
    _registered("smol")
    _registered("smol-dpo")
    _registered("deep", layers=4)
    _registered("broken", status="invalid")
    response = staff.post(reverse("condition_lambda_sweep"), {"b_family": "dense", **fields})
    assert response.headers["HX-Retarget"] == "#builder-error"
    assert error in html_module.unescape(response.content.decode())
    assert not _rows(response.content.decode())


def test_a_study_built_across_models_stores_each_conditions_model(staff):
    smol, dpo = _registered("smol"), _registered("smol-dpo")
    rows = [
        {"name": "dense", "policy": {"kind": "dense"}},
        {"name": "smol", "policy": {"kind": "dense"}, "model": "smol"},
        {"name": "half", "policy": {"kind": "static", "threshold": 0.05}, "model": "smol",
         "aligned": "smol-dpo", "alignment_lambda": 0.5},
    ]
    data = {**BASE, "conditions": "", "prompts": "Write fizzbuzz.",
            "built": [json.dumps(r) for r in rows]}
    assert staff.post(reverse("study_new"), data).status_code == 302
    study = Study.objects.get(name=BASE["name"])
    got = [(c.name, c.model, c.aligned_model, c.alignment_lambda)
           for c in study.conditions.order_by("position")]
    assert got == [("dense", None, None, None), ("smol", smol, None, None),
                   ("half", smol, dpo, 0.5)]
    # A row naming a model that is not valid (any more) creates nothing.
    ModelEntry.objects.filter(key="smol-dpo").update(status="invalid")
    response = staff.post(reverse("study_new"), {**data, "name": "Another"})
    assert response.status_code == 200
    assert "Condition 3 (half)" in html_module.unescape(response.content.decode())
    assert not Study.objects.filter(name="Another").exists()
