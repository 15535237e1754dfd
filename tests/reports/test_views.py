"""The study page's results fragment (the report page and its files: test_build.py)."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from annotations import services
from annotations.models import Calibration, Generation
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db


def test_study_page_shows_progress_alpha_and_win_rates(users):
    staff, alice, bob = users
    study = make_study(n_items=3, raters=[alice, bob])
    finish_generations(study)
    # Both raters agree: on item 0 condition A wins, on item 1 it's a tie, on item 2 B wins.
    verdict = {"HumanEval/0": "a", "HumanEval/1": "tie", "HumanEval/2": "b"}
    for rater in (alice, bob):
        while (a := services.assignment_next(study=study, rater=rater)) is not None:
            wanted = verdict[a.pair.item.task_id]
            a_side = "left" if a.a_on_left else "right"
            b_side = "right" if a.a_on_left else "left"
            choice = {"a": a_side, "b": b_side, "tie": "tie"}[wanted]
            services.judgment_submit(assignment=a, choice=choice)
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert "9 / 9" in page
    fragment = reverse("study_results", args=[study.id])
    assert f'hx-get="{fragment}"' in page, "the study page does not load its results"
    html = client.get(fragment, HTTP_HX_REQUEST="true").content.decode()
    assert 'id="alpha">1.000<' in html, "perfect agreement must give alpha 1"
    assert "dense" in html and "static t=0.05" in html
    table = html[html.index('id="win-rates"'):].split("</table>")[0]
    # Each condition pair: 1 win, 1 tie, 1 loss per rater -> win rate 0.5 with 6 judgments.
    assert table.count("<td>0.500</td>") == 3, table
    # The report's test, with items as clusters: not a sign test over 6 "independent" verdicts.
    assert "Cluster p (Holm)" in table and "Sign test" not in html
    assert html.count('class="achieved-sparsity"') == 3, "one per condition"
    # The always-valid sequences of the comparisons with dense: 3 items, no answer yet.
    monitored = html[html.index('id="sequential"'):].split("</table>")[0]
    assert monitored.count("<td>3</td><td>0.500</td>") == 2 and "continue" in monitored


def test_results_fragment_is_closed_to_raters_and_anonymous(users):
    _, alice, _ = users
    study = make_study(n_items=1)
    url = reverse("study_results", args=[study.id])
    rater = Client()
    rater.force_login(alice)
    assert rater.get(url).status_code == 302, "a rater reached the study's results"
    assert Client().get(url).status_code == 302, "an anonymous visitor reached the results"


def test_results_fragment_of_a_study_without_judgments_says_why(users):
    staff, _, _ = users
    study = make_study(n_items=1)
    finish_generations(study)
    client = Client()
    client.force_login(staff)
    response = client.get(reverse("study_results", args=[study.id]), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert response.status_code == 200, html
    assert "not yet computable — no judgments yet" in html
    assert "0 judgments counted" in html and "No rater left out" in html


def test_setup_page_shows_each_calibrated_conditions_target_beside_what_it_achieved(users):
    """A condition calibrated to 48 % achieved 56.6 % while generating; the setup page showed
    the target only."""
    staff, alice, _ = users
    study = make_study(n_items=2, conditions=[
        ("dense", {"kind": "dense"}),
        ("static 50%", {"kind": "static", "threshold": 0.0321}),
        ("cal 25%", {"kind": "calibrated", "target_sparsity": 0.25,
                     "thresholds": [0.01] * 30, "site": "h"}),
    ])
    Calibration.objects.create(condition=study.conditions.get(name="static 50%"),
                               target_sparsity=0.5, status=Calibration.Status.DONE)
    client = Client()
    client.force_login(staff)
    setup = client.get(reverse("study_setup", args=[study.id])).content.decode()
    fragment = reverse("study_condition_sparsity", args=[study.id])
    listed = setup[setup.index('id="condition-summaries"'):].split("</td>")[0]
    assert f'hx-get="{fragment}"' in listed and "achieved" not in listed
    before = client.get(fragment, HTTP_HX_REQUEST="true").content.decode()
    assert "achieved" not in before, "no output yet: nothing achieved"
    finish_generations(study)
    active = {"dense": (1.0, 1.0), "static 50%": (0.45, 0.418), "cal 25%": (0.7, 0.8)}
    for item, values in zip(study.items.order_by("id"), ((0, 0, 0), (1, 1, 1)), strict=True):
        for (name, fractions), index in zip(active.items(), values, strict=True):
            Generation.objects.filter(item=item, condition__name=name).update(
                active_fraction=fractions[index])
    shown = client.get(fragment, HTTP_HX_REQUEST="true").content.decode()
    rows = dict(re.findall(r"<strong>(.*?)</strong>.*?(?:achieved-sparsity\">(.*?)</span>)",
                           shown))
    assert rows == {"dense": "achieved 0 %", "static 50%": "target 50 % · achieved 56.6 %",
                    "cal 25%": "target 25 % · achieved 25 %"}
    # The study page's telemetry table: the same numbers, now for every calibrated condition.
    results = client.get(reverse("study_results", args=[study.id])).content.decode()
    assert "(target 50 %)" in results and "(target 25 %)" in results
    rater = Client()
    rater.force_login(alice)
    assert rater.get(fragment).status_code == 302, "a rater reached the setup's conditions"
