"""One rule for which judgments count: the study page, the report, its exports and the
preference pairs agree on a study where the old rules did not (a rater blocked by an
attention check after judging: the study page and the report counted them, the preference
pairs did not)."""

import csv
import io
import json
import re

import pandas as pd
import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from analysis.agreement import agreement_summary, choice_codes
from annotations import services
from annotations.models import Enrolment, GoldAnswer, Item, Study
from annotations.selectors import COUNTING_RULE
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db

# Per item, who wins: alice and carol agree, bob disagrees with both on every item.
AGREED = {"HumanEval/0": "a", "HumanEval/1": "tie", "HumanEval/2": "b"}
BOB = {"HumanEval/0": "b", "HumanEval/1": "a", "HumanEval/2": "tie"}


def _judge_all(study, rater, verdicts):
    while (a := services.assignment_next(study=study, rater=rater)) is not None:
        a_side, b_side = ("left", "right") if a.a_on_left else ("right", "left")
        choice = {"a": a_side, "b": b_side, "tie": "tie"}[verdicts[a.pair.item.task_id]]
        services.judgment_submit(assignment=a, choice=choice)


def _gold_check(study, rater, *, right: bool):
    assignment = services.assignment_next(study=study, rater=rater)
    assert hasattr(assignment.pair, "gold"), "gold rate 1 must hand out the gold pair"
    a_side, b_side = ("left", "right") if assignment.a_on_left else ("right", "left")
    services.judgment_submit(assignment=assignment, choice=a_side if right else b_side)


@pytest.fixture
def blocked_after_judging(users, monkeypatch):
    """Three raters judge all 9 pairs; then a gold pair appears, which alice answers right
    and bob wrong, so the study blocks bob (gold_block_after 1) with 9 judgments made."""
    monkeypatch.setattr("reports.build.REPORT_BOOTSTRAP", 50)
    staff, alice, bob = users
    carol = get_user_model().objects.create_user("carol", password="pw-carol-123")
    study = make_study(n_items=3, overlap=3, raters=[alice, bob, carol], name="counting")
    finish_generations(study)
    for rater, verdicts in ((alice, AGREED), (bob, BOB), (carol, AGREED)):
        _judge_all(study, rater, verdicts)
    Item.objects.create(study=study, dataset="humaneval", task_id="HumanEval/9", prompt="gold")
    finish_generations(study)
    GoldAnswer.objects.create(pair=study.pairs.get(item__task_id="HumanEval/9",
                                                   generation_a__condition__position=0,
                                                   generation_b__condition__position=1),
                              winner="a")
    Study.objects.filter(id=study.id).update(gold_rate=1.0, gold_block_after=1)
    study.refresh_from_db()
    _gold_check(study, alice, right=True)
    _gold_check(study, bob, right=False)
    assert Enrolment.objects.get(study=study, rater=bob).blocked_at is not None
    client = Client()
    client.force_login(staff)
    return study, client, bob


def test_page_report_exports_and_preference_pairs_count_the_same_judgments(
    blocked_after_judging,
):
    study, client, bob = blocked_after_judging
    summary = json.loads(
        client.get(reverse("study_report_file", args=[study.id, "summary.json"])).content
    )
    rows = list(csv.DictReader(io.StringIO(
        client.get(reverse("study_report_file", args=[study.id, "judgments.csv"])).content.decode()
    )))
    # bob is rater-2 (pseudonyms in user-id order: alice, bob, carol).
    bob_rows = [r for r in rows if r["rater"] == "rater-2"]
    assert len(bob_rows) == 10, "the export lost bob's judgments (9 ordinary, 1 gold)"
    assert {r["counted"] for r in bob_rows} == {"False"}, "a blocked rater's judgment counted"
    counted = [r for r in rows if r["counted"] == "True"]
    assert len(counted) == 18 and not any(r["gold"] == "True" for r in counted)

    # The old rules disagreed here: with bob, alpha is well below 1; without him it is 1.
    with_bob = [r for r in rows if r["gold"] == "False"]
    order = ["dense", "static t=0.05", "dynamic t=0.05"]
    alpha_with_bob = agreement_summary(
        choice_codes(pd.DataFrame(with_bob), order), "nominal", bootstrap=0
    )["alpha"]
    assert alpha_with_bob < 0.5, f"the set-up has no disagreement to remove ({alpha_with_bob})"

    assert summary["counting"] == {
        "rule": COUNTING_RULE,
        "counted": 18,
        "gold": 1,
        "excluded_judgments": 9,
        "excluded_raters": [{"rater": "rater-2", "judgments": 9,
                             "reason": "blocked after 1 failed attention check(s)"}],
    }
    assert summary["counts"]["judgments"] == 18 and summary["counts"]["raters"] == 2
    overall = summary["agreement"]["overall"]
    assert overall["alpha"] == pytest.approx(1.0)
    assert summary["gold"]["n"] == 1, "the blocked rater's gold check fed the gold accuracy"

    page = client.get(reverse("study_results", args=[study.id]), HTTP_HX_REQUEST="true")
    html = page.content.decode()
    shown = re.search(r'id="alpha">([^<]+)<', html).group(1)
    assert shown == f"{overall['alpha']:.3f}", "the study page's alpha is not the report's"
    low, high = overall["alpha_ci"]
    assert f"(95% CI {low:.3f} – {high:.3f})" in html, "the study page's CI is not the report's"
    for pair in summary["preference"]["pairs"]:
        cells = f"<td>{pair['wins']}</td><td>{pair['ties']}</td><td>{pair['losses']}</td>"
        assert cells in html, f"{pair['condition_a']} vs {pair['condition_b']}: {cells} not shown"
    assert "18 judgments from 2 raters" in html
    counting = html[html.index('id="counting"'):]
    assert "9 judgments of 1 rater (rater-2: 9, blocked after 1 failed attention check(s))" in (
        " ".join(counting.split())
    ), counting[:600]
    report = client.get(reverse("study_report", args=[study.id])).content.decode()
    assert " ".join(counting[: counting.index("</p>")].split()) in " ".join(report.split()), (
        "the report does not state the same exclusion as the study page"
    )

    export = client.get(reverse("export_preferences", args=[study.id]))
    pairs = [json.loads(line) for line in b"".join(export.streaming_content).splitlines()]
    decisive = [r for r in counted if r["winner"] in ("a", "b")]
    assert len(pairs) == len(decisive) == 12
    assert "rater-2" not in {p["rater"] for p in pairs}, "the blocked rater's verdicts"
