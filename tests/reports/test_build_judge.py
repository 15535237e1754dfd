"""The report's LLM judge against the humans (issue 31): two raters judge every pair through
the services, a judge's verdicts are stored beside them, and the report's numbers are the
ones counted from the rows by hand; the verdicts never count as judgments."""

import pytest
from django.conf import settings

from annotations.models import JudgeVerdict, Judgment
from inference.model_info import default_model_path, fingerprint_file
from reports import build as report_build
from tests.reports.test_build import rated_study

pytestmark = pytest.mark.django_db

TWO = {
    "dense": ({"kind": "dense"}, 1.0, 10.0, 0.0, 0.6),
    "static t=0.05": ({"kind": "static", "threshold": 0.05}, 0.6, 14.0, -1.5, 0.55),
}
URL, MODEL = "http://127.0.0.1:8001/v1", "dense"
FLIP = {"a": "b", "b": "a", "tie": "tie"}


def judged_study(fingerprint: str = "some-model-0123"):
    """Two raters judge every pair; the judge agrees with rater0 on every pair but the
    first, where it says the opposite, answers both orders of each pair, and leaves one
    order of the last pair without a verdict."""
    study, raters = rated_study(n_items=8, n_raters=2, name="judged", conditions=TWO)
    pairs = list(study.pairs.filter(gold_copy=False).order_by("id"))
    for i, pair in enumerate(pairs):
        human = Judgment.objects.get(assignment__pair=pair, assignment__rater=raters[0])
        said = FLIP[human.winner] if i == 0 else human.winner
        for order in ("ab", "ba"):
            silent = i == len(pairs) - 1 and order == "ba"
            JudgeVerdict.objects.create(
                pair=pair, order=order, judge_url=URL, judge_model=MODEL, status="done",
                label="" if silent else "A>B", winner="" if silent else said,
                answered_fingerprint=fingerprint,
            )  # fmt: skip
    return study, raters, pairs


def test_the_report_measures_the_judge_against_both_raters():
    study, raters, pairs = judged_study()
    report = report_build.study_report(study, bootstrap=200)
    summary = report.summary
    assert summary["counts"]["judgments"] == Judgment.objects.filter(
        assignment__pair__study=study
    ).count()  # the verdicts are not judgments
    (judge,) = summary["judge"]["judges"]
    assert judge["judge"] == f"{MODEL} at {URL}"
    assert judge["verdicts"] == 2 * len(pairs) and judge["unparseable"] == 1
    # By hand: every human verdict against the judge's (both orders agree, so it is one).
    verdict = {
        v.pair_id: v.winner for v in JudgeVerdict.objects.filter(pair__in=pairs, order="ab")
    }
    humans = Judgment.objects.filter(assignment__pair__in=pairs)
    same = sum(j.winner == verdict[j.assignment.pair_id] for j in humans)
    overall = judge["agreement"]["overall"]
    assert overall["n"] == humans.count() == 2 * len(pairs)
    assert overall["agreement"] == pytest.approx(same / humans.count())
    assert overall["kappa"] is not None and overall["agreement_ci"] and overall["kappa_ci"]
    # Every pair judged both orders alike but the last (one order only).
    bias = judge["position_bias"]
    assert bias["pairs_both_orders"] == len(pairs) - 1 == bias["consistent"]
    assert {r["condition"] for r in judge["bradley_terry"]["conditions"]} == set(TWO)
    (row,) = judge["separation"]
    human_row = summary["preference"]["pairs"][0]
    assert (row["human_p"], row["human_win_rate"]) == (
        human_row["p_cluster_holm"], human_row["win_rate_ties_half"]
    )
    assert judge["weak_note"] is None
    html = report_build.render_report_html(report)
    assert 'id="judge-section"' in html and f"{MODEL} at {URL}" in html
    assert "weak judge" not in html


def test_the_shipped_135m_model_is_reported_as_a_weak_judge():
    shipped = fingerprint_file(default_model_path(), settings.MODEL_CACHE_DIR)
    study, _, _ = judged_study(fingerprint=shipped)
    report = report_build.study_report(study, bootstrap=50)
    (judge,) = report.summary["judge"]["judges"]
    assert "weak judge" in judge["weak_note"]
    assert "weak judge" in report_build.render_report_html(report)


def test_a_study_no_judge_has_judged_says_so():
    study, _ = rated_study(n_items=2, n_raters=2, name="unjudged", conditions=TWO)
    summary = report_build.study_report(study, bootstrap=20).summary
    assert summary["judge"] == {"judges": [], "note": "no LLM judge has judged this study"}
