import pytest
from django.test import Client
from django.urls import reverse

from annotations import services
from annotations.models import Assignment, Calibration, Execution, Generation, Judgment
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_rate_page_is_blind_and_escapes_outputs(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    html = login(alice).get(reverse("rate", args=[study.id])).content.decode()
    assert 'Response 1 <span class="side-wide">(left)</span>' in html
    for condition in study.conditions.all():
        assert condition.name not in html, f"condition name {condition.name!r} leaked to the rater"
    for leak in ("threshold", "policy", "dense", "dynamic", "active_fraction", "tokens_per_s"):
        assert leak not in html, f"{leak!r} appears in the rater page"
    assert "Prompt <b>0</b>" not in html and "Prompt &lt;b&gt;0&lt;/b&gt;" in html


def test_htmx_judge_returns_the_next_pair_fragment(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    client = login(alice)
    client.get(reverse("rate", args=[study.id]))
    assignment = Assignment.objects.get(rater=alice)
    response = client.post(
        reverse("judge", args=[assignment.id]),
        {"choice": "left", "time_on_task_ms": "1234"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="pair"'), "htmx must get only the pair fragment"
    assert "<html" not in body
    judgment = Judgment.objects.get(assignment=assignment)
    assert judgment.time_on_task_ms == 1234
    assert Assignment.objects.filter(rater=alice).count() == 2, "the next pair was not assigned"


def test_rater_cannot_touch_another_raters_assignment(users):
    _, alice, bob = users
    study = make_study(n_items=1, raters=[alice, bob])
    finish_generations(study)
    alices = services.assignment_next(study=study, rater=alice)
    response = login(bob).post(reverse("judge", args=[alices.id]), {"choice": "left"})
    assert response.status_code == 404
    assert not Judgment.objects.exists()


def test_rater_cannot_open_a_study_they_are_not_enrolled_in(users):
    _, alice, bob = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    assert login(bob).get(reverse("rate", args=[study.id])).status_code == 404


@pytest.mark.parametrize("name", ["study_list", "study_detail", "study_progress"])
def test_staff_pages_are_closed_to_raters_and_anonymous(users, name):
    _, alice, _ = users
    study = make_study(n_items=1)
    url = reverse(name) if name == "study_list" else reverse(name, args=[study.id])
    assert login(alice).get(url).status_code == 302
    assert Client().get(url).status_code == 302


def test_judge_requires_csrf(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    assignment = services.assignment_next(study=study, rater=alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(reverse("judge", args=[assignment.id]), {"choice": "left"})
    assert response.status_code == 403


def test_bad_choice_is_a_clear_400(users):
    _, alice, _ = users
    study = make_study(n_items=1, raters=[alice])
    finish_generations(study)
    assignment = services.assignment_next(study=study, rater=alice)
    response = login(alice).post(reverse("judge", args=[assignment.id]), {"choice": "both"})
    assert response.status_code == 400 and b"left, right, tie or both bad" in response.content


def test_progress_fragment_stops_polling_when_finished(users):
    staff, _, _ = users
    study = make_study(n_items=1)
    finish_generations(study)
    response = login(staff).get(reverse("study_progress", args=[study.id]), HTTP_HX_REQUEST="true")
    assert response.status_code == 286


def test_a_condition_being_calibrated_shows_its_state_not_zero_of_zero(users):
    """Its outputs do not exist until its thresholds do: 'waiting for calibration',
    'calibrating… 40 %' or why it failed, and the fragment polls until calibration ends."""
    staff, _, _ = users
    study = make_study(n_items=1, conditions=[
        ("dense", {"kind": "dense"}), ("s25", {"kind": "static"}), ("s50", {"kind": "static"}),
    ])
    calibrations = [
        Calibration.objects.create(condition=study.conditions.get(name=name), target_sparsity=t)
        for name, t in (("s25", 0.25), ("s50", 0.5))
    ]
    services.generations_create(study=study)  # dense only: the others are not ready
    Generation.objects.filter(item__study=study).update(status=Generation.Status.DONE)
    progress = reverse("study_progress", args=[study.id])

    def fragment() -> tuple[int, dict[str, str]]:
        """The fragment's status and each condition's "Done" cell."""
        response = login(staff).get(progress, HTTP_HX_REQUEST="true")
        rows = [row.split("</td>") for row in response.content.decode().split("<tr>")[2:]]
        # Only the conditions' rows: the models' table below starts with its own header row.
        done = {row[0].removeprefix("<td>"): " ".join(row[2].removeprefix("<td>").split())
                for row in rows if row[0].startswith("<td>")}
        return response.status_code, done

    status, done = fragment()
    assert done == {"dense": "1 / 1", "s25": "waiting for calibration",
                    "s50": "waiting for calibration"}
    assert status == 200, "polling stopped while conditions wait for their outputs"
    Calibration.objects.filter(id=calibrations[0].id).update(status="running", progress=0.4)
    Calibration.objects.filter(id=calibrations[1].id).update(
        status="failed", error="the profiled prompts gave no activations"
    )
    status, done = fragment()
    assert status == 200 and done["s25"] == "calibrating… 40 %"
    assert done["s50"] == (
        '<div class="error">calibration failed: the profiled prompts gave no activations</div>'
    )
    page = login(staff).get(reverse("study_detail", args=[study.id])).content.decode()
    assert "0 / 0" not in page and "1 condition being calibrated" in page
    listed = login(staff).get(reverse("study_list")).content.decode()
    assert "1 / 1<span" in listed and "1 condition being calibrated" in listed, (
        "the study list reads '1 / 1' as if the study's outputs were all there"
    )
    Calibration.objects.filter(id=calibrations[0].id).update(status="failed")
    status, done = fragment()
    assert status == 286, "every calibration ended (failed): nothing more will come"


def test_study_page_warns_loudly_when_checks_ran_in_the_guard_only_sandbox(users):
    staff, _, _ = users
    study = make_study(n_items=1)
    finish_generations(study)
    generations = list(Generation.objects.filter(item__study=study))
    Execution.objects.create(
        generation=generations[0], status="passed", code="", duration_s=0.1,
        containment="namespaces",
    )  # fmt: skip
    page = login(staff).get(reverse("study_detail", args=[study.id])).content.decode()
    assert 'id="guard-only"' not in page
    Execution.objects.create(
        generation=generations[1], status="passed", code="", duration_s=0.1, containment="guard"
    )
    page = login(staff).get(reverse("study_detail", args=[study.id])).content.decode()
    assert 'id="guard-only"' in page and "1 Pass@1 check of this study ran without" in page
