"""`manage.py study_report` and the staff report page: files, escaping, permissions, and the
same numbers from both."""

import csv
import io
import json
import math
import random
import re
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from analysis.__main__ import main as analysis_cli
from analysis.alignment import NOT_RUN
from annotations import services
from annotations.models import (
    Condition,
    Enrolment,
    Execution,
    ExecutionJob,
    Generation,
    Judgment,
    ModelEntry,
    Study,
)
from reports import build as report_build
from tests.annotations.conftest import finish_generations, make_study

pytestmark = pytest.mark.django_db


XSS_TEXT = '<img src=x onerror="alert(1)">'
XSS_NAME = "<script>alert('study')</script>"
FORMULA = '=HYPERLINK("http://evil")'
# condition -> (policy, active_fraction, tokens_per_s, planted BT strength, Pass@1 chance)
CONDITIONS = {
    "dense": ({"kind": "dense"}, 1.0, 10.0, 0.0, 0.6),
    "static t=0.05": ({"kind": "static", "threshold": 0.05}, 0.6, 14.0, -0.2, 0.55),
    "dynamic t=0.05": (
        {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1.0},
        0.55,
        13.0,
        -0.1,
        0.55,
    ),
}
SWEEP = {  # a planted sweep: static loses preference and Pass@1 as it speeds up; dynamic holds
    "dense": ({"kind": "dense"}, 1.0, 10.0, 0.0, 0.95),
    "static 20%": ({"kind": "static", "threshold": 0.01}, 0.8, 10.5, 0.0, 0.9),
    "static 40%": ({"kind": "static", "threshold": 0.03}, 0.6, 12.0, -0.5, 0.8),
    "static 55%": ({"kind": "static", "threshold": 0.06}, 0.45, 15.0, -1.5, 0.4),
    "static 65%": ({"kind": "static", "threshold": 0.1}, 0.35, 18.0, -3.0, 0.05),
    "dynamic 22%": (
        {"kind": "dynamic", "threshold": 0.01, "entropy_scale": 1.0}, 0.78, 10.2, 0.0, 0.95,
    ),
    "dynamic 42%": (
        {"kind": "dynamic", "threshold": 0.03, "entropy_scale": 1.0}, 0.58, 10.1, 0.0, 0.95,
    ),
}


def rated_study(
    n_items: int = 6, n_raters: int = 4, name: str = XSS_NAME, conditions=CONDITIONS,
    design: str = "all_pairs",
):
    """A study whose every pair was judged by `n_raters` raters through the services:
    telemetry and sandbox results per condition, verdicts drawn under Bradley–Terry with
    the planted strengths (15 % ties), one output an XSS payload, one a formula."""
    User = get_user_model()
    raters = [
        User.objects.create_user(f"rater{i}", password="pw-123-rater") for i in range(n_raters)
    ]
    study = make_study(
        n_items=n_items,
        overlap=n_raters,
        raters=raters,
        name=name,
        conditions=[(cname, spec[0]) for cname, spec in conditions.items()],
    )
    Study.objects.filter(id=study.id).update(pair_design=design)
    study.refresh_from_db()
    finish_generations(study)
    rng = random.Random(3)
    generations = Generation.objects.filter(item__study=study).select_related("condition")
    for i, g in enumerate(generations.order_by("id")):
        _, active, speed, _, quality = conditions[g.condition.name]
        g.active_fraction = min(1.0, active + rng.uniform(-0.02, 0.02))
        g.tokens_per_s = speed + rng.uniform(-0.5, 0.5)
        g.latency_s = 30 / g.tokens_per_s
        # A 300-token prompt read at 40x the condition's speed; decode steps a bit faster
        # than the pooled tokens/s, which counts the prompt's time too.
        g.prompt_tokens = 300
        g.telemetry = {"prefill_s": 300 / (40 * speed),
                       "decode_latency_s_per_token": 1 / (1.2 * g.tokens_per_s)}
        g.peak_rss_bytes = int(500 * 2**20 * (0.5 + active / 2))
        g.text = XSS_TEXT if i == 0 else (FORMULA if i == 1 else g.text)
        g.save()
        passed = rng.random() < quality
        Execution.objects.create(
            generation=g, status="passed" if passed else "failed", code="", duration_s=0.1
        )
    for rater in raters:
        while (
            assignment := services.assignment_next(study=study, rater=rater, rng=rng)
        ) is not None:
            left = conditions[assignment.generation_on("left").condition.name][3]
            right = conditions[assignment.generation_on("right").condition.name][3]
            if rng.random() < 0.15:
                choice = "tie"
            else:
                choice = "left" if rng.random() < 1 / (1 + math.exp(right - left)) else "right"
            services.judgment_submit(assignment=assignment, choice=choice)
    return study, raters


def test_command_writes_every_file_with_plots_and_inert_payloads(tmp_path):
    study, raters = rated_study()
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "50")
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {
        "report.html",
        "judgments.csv",
        "generations.csv",
        "ratings.csv",
        "subgroups.csv",
        "judgments.json",
        "summary.json",
    }
    html = (tmp_path / "report.html").read_text()
    for plot in ("plot-alignment", "plot-ratings", "plot-pareto"):
        assert f'id="{plot}"' in html
    assert html.count("data:image/png;base64,") == 3
    assert "<script" not in html and XSS_TEXT not in html and 'onerror="alert' not in html
    assert "&lt;script&gt;alert(&#x27;study&#x27;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert "http://" not in html.replace("http://evil", ""), "no external asset may be loaded"
    assert 'id="models-section"' not in html, "one model: no by-model section"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"]["judgments"] == 4 * 6 * 3
    assert summary["agreement"]["overall"]["alpha"] is not None
    assert summary["mixed_model"]["fixed"] is not None
    assert {r["condition"] for r in summary["conditions"]} == set(CONDITIONS)
    # Pass@1 with its Wilson interval and the failures by kind (code="" here: "no code").
    for row in summary["conditions"]:
        low, high = row["pass_at_1_ci"]
        assert low <= row["n_passed"] / row["n_checked"] <= high
        assert set(row["outcomes"]) <= {"no code"}
        assert sum(row["outcomes"].values()) == row["n_checked"] - row["n_passed"]
    assert html.count('class="pass-at-1"') == len(CONDITIONS) and "no code " in html
    assert summary["matched_sparsity"][0]["static"] == "static t=0.05"
    # Ties modelled and style control (tests passed: the outputs' only measured style)
    # beside the raw ratings, the sentence about the dense condition.
    style = summary["preference"]["style_control"]
    assert style["controls"] == ["passed"] and style["focus"] == "dense"
    assert 'id="ties-model"' in html and "Davidson (1970)" in html
    assert 'id="style-sentence"' in html and "dense&#x27;s" in html
    # The stopping rule, and each comparison with the dense condition where it stands.
    sequential = summary["sequential"]["comparisons"]
    assert [c["condition_b"] for c in sequential] == ["static t=0.05", "dynamic t=0.05"]
    assert all(c["n_items"] == 6 and c["ci"][0] <= c["estimate"] <= c["ci"][1] for c in sequential)
    assert 'id="stopping-rule"' in html and "always-valid" in html


def test_a_series_of_one_setting_states_its_sparsity_once(tmp_path):
    """One static setting read "(1 setting, achieved sparsity 37–37 %)"."""
    conditions = {name: SWEEP[name] for name in ("dense", "static 40%")}
    study, _ = rated_study(n_items=3, n_raters=2, conditions=conditions)
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    html = (tmp_path / "report.html").read_text()
    shown = re.search(r"\(1 setting, achieved sparsity ([^)]*)\)", html)
    assert shown and re.fullmatch(r"\d+ %", shown[1]), shown and shown[0]


def test_exported_judgments_reproduce_the_style_control_from_the_cli(tmp_path, capsys):
    study, _ = rated_study(n_items=4)
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "40")
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = list(csv.DictReader((tmp_path / "judgments.csv").open()))
    assert {"passed_a", "passed_b"} <= set(rows[0])
    counted = tmp_path / "counted.csv"
    with counted.open("w", newline="") as fp:
        writer = csv.DictWriter(fp, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["counted"] == "True")
    capsys.readouterr()
    argv = ["preference", str(counted), "--control", "passed", "--focus", "dense"]
    assert analysis_cli([*argv, "--bootstrap", "40", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    report_style = summary["preference"]["style_control"]
    assert cli["style_control"]["coefficients"] == pytest.approx(report_style["coefficients"])
    assert cli["style_control"]["coefficients_ci"]["passed"] == pytest.approx(
        report_style["coefficients_ci"]["passed"]
    )
    assert cli["style_control"]["sentence"] == report_style["sentence"]


def test_the_answer_reads_the_planted_effects(tmp_path):
    # 20 items: with 8, the item-cluster test cannot reach p < 0.033, nor Holm over a sweep
    # of four below 0.13, whatever the raters said.
    study, _ = rated_study(n_items=20, n_raters=2, name="planted", conditions=SWEEP,
                           design="vs_first")
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "200")
    summary = json.loads((tmp_path / "summary.json").read_text())
    families = {
        f["series"]: {s["metric"]: s for s in f["sentences"]}
        for f in summary["findings"]["families"]
    }
    assert set(families) == {"static", "dynamic"}
    static, dynamic = families["static"], families["dynamic"]
    # Planted: static loses preference and Pass@1 and gains speed as sparsity grows.
    assert static["win_rate_vs_dense"]["direction"] == "down", static["win_rate_vs_dense"]
    assert static["pass_at_1"]["direction"] == "down", static["pass_at_1"]
    assert static["tokens_per_s"]["direction"] == "up", static["tokens_per_s"]
    # Planted: dynamic is as good as dense and no faster.
    assert dynamic["win_rate_vs_dense"]["direction"] == "none", dynamic["win_rate_vs_dense"]
    assert "no difference was detected" in dynamic["win_rate_vs_dense"]["text"]
    assert dynamic["pass_at_1"]["direction"] == "none"
    html = (tmp_path / "report.html").read_text()
    assert 'id="findings"' in html and 'data-direction="down"' in html
    assert all(f'href="{name}"' in html for name in report_build.FILE_NOTES), "a file unlinked"
    matched = {m["condition"]: m for m in summary["matched_sparsity"]}
    assert matched["dynamic 22%"]["matched"] and matched["dynamic 22%"]["static"] == "static 20%"


SITES = {  # masking-only (a threshold of 0) and each site's skippable bytes
    "dense": ({"kind": "dense"}, 1.0, 10.0, 0.0, 0.6),
    "static 0%": ({"kind": "static", "threshold": 0.0}, 1.0, 10.0, 0.0, 0.6),
    "static 40%": ({"kind": "static", "threshold": 0.05}, 0.6, 11.0, 0.0, 0.6),
    "gate 40%": ({"kind": "static", "threshold": 0.05, "site": "gate"}, 0.6, 12.0, 0.0, 0.6),
    "static 40% @input": (
        {"kind": "static", "threshold": 0.05, "site": "input"}, 0.6, 13.0, 0.0, 0.6,
    ),
}


def test_report_and_study_page_say_which_bytes_each_condition_can_skip(tmp_path, users):
    study, _ = rated_study(n_items=3, n_raters=2, name="sites", conditions=SITES,
                           design="vs_first")
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "50")
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["condition"]: r for r in summary["conditions"]}
    assert [rows[n]["skips_bytes"] for n in SITES] == [False, False, True, True, True]
    assert rows["static 0%"]["bytes_note"].startswith("masking-only: reads every weight")
    assert "only the down_proj rows" in rows["static 40%"]["bytes_note"]
    assert "at most 2/3" in rows["gate 40%"]["bytes_note"]
    assert "all seven projections" in rows["static 40% @input"]["bytes_note"]
    assert rows["static 40% @input"]["summary"] == "static t=0.05 @input"
    assert rows["gate 40%"]["summary"] == "static t=0.05 @gate"
    html = (tmp_path / "report.html").read_text()
    conditions = html[html.index('id="conditions"'):].split("</table>")[0]
    assert conditions.count('class="muted bytes-note"') == len(SITES)
    assert "at most 1/3 of the MLP&#x27;s weight bytes" in conditions
    [row] = [r for r in conditions.split("<tr>") if "static 40% @input" in r]
    # The summary names the site whatever the name says (issue 29: summaries hid it).
    assert "static t=0.05 @input" in row.split("bytes-note")[0]
    assert 'id="speed-caveat"' in html and "wall-clock times" in html
    staff = Client()
    staff.force_login(users[0])
    page = staff.get(reverse("study_detail", args=[study.id])).content.decode()
    progress = page[page.index('id="progress"'):].split("</table>")[0]
    assert "masking-only: reads every weight" in progress
    assert "at most 2/3 of the MLP&#x27;s weight bytes" in progress


def test_exports_hold_every_field_the_rater_page_collects(tmp_path):
    from annotations.forms import JudgmentForm
    from annotations.models import Criterion, CriterionRating

    User = get_user_model()
    raters = [
        User.objects.create_user(f"exporter-{i}-kestrel", password="pw-123-rater")
        for i in range(2)
    ]
    study = make_study(n_items=2, overlap=2, raters=raters, name="exports")
    finish_generations(study)
    criteria = [
        Criterion.objects.create(study=study, name=name, question=f"{name}?", position=i)
        for i, name in enumerate(["correct", "readable"])
    ]
    rng = random.Random(5)
    for rater in raters:
        while (a := services.assignment_next(study=study, rater=rater, rng=rng)) is not None:
            services.judgment_submit(
                assignment=a, choice=rng.choice(["left", "right", "tie", "both_bad"]),
                rationale=f"=cmd|' /C calc'!A{a.id}", time_on_task_ms=1000 + a.id,
                ratings={c.id: (rng.randint(1, 5), rng.randint(1, 5)) for c in criteria},
            )
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    judgments = {int(r["judgment"]): r for r in csv.DictReader((tmp_path / "judgments.csv").open())}
    # What the rater page collects: the form's fields, a Likert value per criterion and side,
    # and the time on task; plus the pseudonym and the gold flag.
    assert set(JudgmentForm(criteria=[]).fields) == {"choice", "rationale"}
    for judgment in Judgment.objects.select_related("assignment"):
        row = judgments[judgment.id]
        assert row["choice"] == judgment.choice
        assert row["rationale"] == "'" + judgment.rationale, "formula-safe"
        assert int(row["time_on_task_ms"]) == judgment.time_on_task_ms
        assert row["rater"].startswith("rater-") and row["gold"] == "False"
    ratings = list(csv.DictReader((tmp_path / "ratings.csv").open()))
    assert len(ratings) == Judgment.objects.count() * len(criteria) * 2
    for stored in CriterionRating.objects.select_related("judgment__assignment", "criterion"):
        mine = {r["side"]: r for r in ratings
                if int(r["judgment"]) == stored.judgment_id
                and r["criterion"] == stored.criterion.name}
        assert (int(mine["a"]["value"]), int(mine["b"]["value"])) == (stored.value_a,
                                                                     stored.value_b)
        a_on_left = stored.judgment.assignment.a_on_left
        assert mine["a"]["screen_side"] == ("left" if a_on_left else "right")
        assert mine["a"]["rater"] == judgments[stored.judgment_id]["rater"]
        assert (mine["a"]["gold"], mine["a"]["counted"]) == ("False", "True")
    # Each criterion's mean per condition, from the counted judgments' ratings.
    summary = json.loads((tmp_path / "summary.json").read_text())
    expected: dict = {}
    for r in ratings:
        expected.setdefault((r["criterion"], r["condition"]), []).append(int(r["value"]))
    means = {(m["criterion"], m["condition"]): m for m in summary["criterion_means"]}
    assert set(means) == set(expected)
    for key, values in expected.items():
        assert means[key]["mean"] == pytest.approx(sum(values) / len(values))
        assert means[key]["n"] == len(values) and means[key]["ci"] is None
    nested = json.loads((tmp_path / "judgments.json").read_text())
    first = next(j for j in nested if j["judgment"] == stored.judgment_id)
    assert first["ratings"][stored.criterion.name] == {"a": stored.value_a, "b": stored.value_b}
    assert first["rationale"] == stored.judgment.rationale, "JSON keeps the text as written"
    archive = zipfile.ZipFile(io.BytesIO(report_build.report_zip(
        {p.name: p.read_bytes() for p in tmp_path.iterdir()})))
    assert "ratings.csv" in archive.namelist()
    everything = "".join(p.read_text() for p in tmp_path.iterdir())
    assert all(r.username not in everything for r in raters)


def test_exports_are_pseudonymized_and_formula_safe(tmp_path):
    study, raters = rated_study(n_items=2)
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    judgments = list(csv.DictReader((tmp_path / "judgments.csv").open()))
    assert {row["rater"] for row in judgments} == {f"rater-{i}" for i in range(1, 5)}
    everything = "".join(p.read_text() for p in tmp_path.iterdir())
    for rater in raters:
        assert rater.username not in everything
    generations = list(csv.DictReader((tmp_path / "generations.csv").open()))
    texts = [row["text"] for row in generations]
    assert "'" + FORMULA in texts and FORMULA not in texts
    assert json.loads((tmp_path / "judgments.json").read_text())[0]["rater"].startswith("rater-")


def test_command_on_a_missing_study_is_a_message():
    with pytest.raises(CommandError, match="no study with id 999"):
        call_command("study_report", 999, "--out", "/tmp/unused")


def test_empty_and_one_condition_studies_give_notes_not_tracebacks(tmp_path):
    study = make_study(name="empty")
    call_command("study_report", study.id, "--out", str(tmp_path / "a"), "--bootstrap", "0")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert "no judgments yet" in " ".join(summary["notes"])
    assert summary["preference"] is None and summary["mixed_model"]["fixed"] is None
    # The study's own item count beside those covered: "3 items" read wrong for 4 items.
    assert "0 of 2 items with an output" in (tmp_path / "a" / "report.html").read_text()
    single = make_study(name="single", conditions=[("dense", {"kind": "dense"})])
    call_command("study_report", single.id, "--out", str(tmp_path / "b"), "--bootstrap", "0")
    html = (tmp_path / "b" / "report.html").read_text()
    assert "1 condition(s): nothing to compare" in html


def test_page_and_downloads_match_the_command_and_are_staff_only(
    users, tmp_path, monkeypatch, settings
):
    monkeypatch.setattr("reports.build.REPORT_BOOTSTRAP", 100)  # both use the default
    staff, alice, _ = users
    study, _ = rated_study(n_items=2, name="plain")
    call_command("study_report", study.id, "--out", str(tmp_path))
    settings.VAR_DIR = tmp_path / "fresh"  # the page builds its own, not the command's
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("study_report", args=[study.id]))
    assert page.status_code == 200 and b"plot-alignment" in page.content
    summary = client.get(reverse("study_report_file", args=[study.id, "summary.json"]))
    assert json.loads(summary.content) == json.loads((tmp_path / "summary.json").read_text())
    archive = client.get(reverse("study_report_file", args=[study.id, "report.zip"]))
    names = set(zipfile.ZipFile(io.BytesIO(archive.content)).namelist())
    assert "judgments.csv" in names and "report.html" in names
    assert (
        client.get(reverse("study_report_file", args=[study.id, "secrets.txt"])).status_code == 404
    )

    rater = Client()
    rater.force_login(alice)
    for url in (
        reverse("study_report", args=[study.id]),
        reverse("study_report_file", args=[study.id, "judgments.csv"]),
    ):
        assert rater.get(url).status_code in (302, 404)
        assert Client().get(url).status_code in (302, 404)


def test_gold_pairs_and_criteria_reach_the_report(tmp_path):
    from annotations.models import Criterion, GoldAnswer, Pair

    User = get_user_model()
    raters = [User.objects.create_user(f"g{i}", password="pw-123-rater") for i in range(3)]
    study = make_study(n_items=3, overlap=3, raters=raters, name="gold")
    study.gold_rate = 0.5
    study.save()
    finish_generations(study)
    gold_pair = Pair.objects.filter(study=study).order_by("id").first()
    GoldAnswer.objects.create(pair=gold_pair, winner="a")
    criterion = Criterion.objects.create(
        study=study, name="<b>correct</b>", question="Correct?", scale_points=5
    )
    rng = random.Random(1)
    for rater in raters:
        while (a := services.assignment_next(study=study, rater=rater, rng=rng)) is not None:
            services.judgment_submit(
                assignment=a,
                choice=rng.choice(["left", "right", "tie"]),
                ratings={criterion.id: (rng.randint(1, 5), rng.randint(1, 5))},
            )
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "20")
    summary = json.loads((tmp_path / "summary.json").read_text())
    on_gold = Judgment.objects.filter(assignment__pair=gold_pair).count()
    assert on_gold >= 1 and summary["gold"]["n"] == on_gold
    assert summary["counts"]["judgments"] == Judgment.objects.count() - on_gold
    assert [c["criterion"] for c in summary["criteria"]] == ["<b>correct</b>"]
    html = (tmp_path / "report.html").read_text()
    assert "&lt;b&gt;correct&lt;/b&gt;" in html and 'id="gold"' in html
    rows = list(csv.DictReader((tmp_path / "judgments.csv").open()))
    assert sum(row["gold"] == "True" for row in rows) == on_gold


PROFILE = [{"name": "experience", "label": "Python experience", "choices": ["novice", "expert"]}]


def test_profile_subgroups_reach_the_report_only_as_group_statistics(tmp_path):
    study, raters = rated_study(n_items=2, n_raters=5, name="profiles")
    Study.objects.filter(id=study.id).update(profile_questions=PROFILE, consent_text="ok")
    answers = ["novice", "novice", "expert", "expert", None]
    for rater, answer in zip(raters, answers, strict=True):
        enrolment = services.enrolment_get(study=study, rater=rater)
        services.enrolment_consent(
            enrolment=enrolment, profile={"experience": answer} if answer else {}
        )
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    summary = json.loads((tmp_path / "summary.json").read_text())
    section = summary["subgroups"]["profile"][0]
    assert section["label"] == "Python experience" and section["n_answered"] == 4
    assert [(g["group"], g["n_raters"]) for g in section["groups"]] == [
        ("novice", 2),
        ("expert", 2),
    ]
    assert section["test"]["permutations"] == 999 and 0 < section["test"]["p_value"] <= 1
    rows = list(csv.DictReader((tmp_path / "subgroups.csv").open()))
    assert {(r["grouping"], r["group"]) for r in rows} >= {
        ("experience", "novice"),
        ("experience", "expert"),
    }
    assert all(not r["group"].startswith("rater-") for r in rows)
    # No file ties a rater (name or pseudonym) to an answer.
    assert "rater-" not in json.dumps(section)
    for name in ("judgments.csv", "judgments.json", "generations.csv"):
        text = (tmp_path / name).read_text()
        assert "novice" not in text and "expert" not in text
    html = (tmp_path / "report.html").read_text()
    assert 'id="subgroups-profile"' in html and "Python experience" in html


def test_the_page_is_built_once_per_state_of_the_data(users, monkeypatch, report_cache):
    monkeypatch.setattr("reports.build.REPORT_BOOTSTRAP", 0)
    monkeypatch.setattr("reports.build.report_figures", lambda summary: {})  # the slow part
    builds = []

    def counting(*args, **kwargs):
        builds.append(1)
        return build(*args, **kwargs)

    build = report_build.study_report
    monkeypatch.setattr("reports.build.study_report", counting)
    staff, alice, _ = users
    study, _ = rated_study(n_items=2, n_raters=2, name="cached")
    client = Client()
    client.force_login(staff)
    url = reverse("study_report", args=[study.id])
    first = client.get(url).content
    assert client.get(url).content == first
    client.get(reverse("study_report_file", args=[study.id, "summary.json"]))
    assert len(builds) == 1
    folders = list((report_cache / str(study.id)).iterdir())
    assert [f.name for f in folders if f.is_dir()] and all(
        (folder / "report.html").read_bytes() == first for folder in folders if folder.is_dir()
    )

    study.overlap = 3
    study.save(update_fields=["overlap"])
    enrolment = services.enrolment_get(study=study, rater=alice)
    assignment = services.assignment_next(study=study, rater=alice)
    services.judgment_submit(assignment=assignment, choice="left")
    summary_url = reverse("study_report_file", args=[study.id, "summary.json"])
    summary = json.loads(client.get(summary_url).content)
    assert len(builds) == 2 and summary["counts"]["judgments"] == 2 * 2 * 3 + 1
    assert len([f for f in (report_cache / str(study.id)).iterdir() if f.is_dir()]) == 1

    flipped = {"a": "b", "b": "a"}[assignment.judgment.winner]
    Judgment.objects.filter(id=assignment.judgment.id).update(winner=flipped)
    client.get(url)
    assert len(builds) == 3, "a changed judgment is a new state"
    Enrolment.objects.filter(id=enrolment.id).update(profile={"experience": "expert"})
    client.get(url)
    call_command("study_report", study.id, "--out", str(report_cache.parent / "out"))
    assert len(builds) == 4, "the command reuses the page's build"


@pytest.mark.parametrize("n_raters", [1, 2])
def test_counts_of_one_read_in_the_singular(users, n_raters):
    """A pilot with one rater (or one rater pair) on one item: "1 rater", never "1 raters"."""
    staff, alice, bob = users
    raters = [alice, bob][:n_raters]
    study = make_study(n_items=1, overlap=n_raters, raters=raters, conditions=[
        ("dense", {"kind": "dense"}), ("static", {"kind": "static", "threshold": 0.05}),
    ])
    finish_generations(study)
    first_picked_a = None
    for rater in raters:
        assignment = services.assignment_next(study=study, rater=rater)
        if first_picked_a is None:
            choice, first_picked_a = "left", assignment.a_on_left
        else:  # the other output, whichever side it is on: two raters who agree would give
            # alpha nothing to vary over (undefined, and then not shown)
            choice = "right" if assignment.a_on_left == first_picked_a else "left"
        services.judgment_submit(assignment=assignment, choice=choice)
    client = Client()
    client.force_login(staff)
    page = client.get(reverse("study_report", args=[study.id])).content.decode()
    results = client.get(reverse("study_results", args=[study.id]),
                         HTTP_HX_REQUEST="true").content.decode()
    if n_raters == 1:
        assert "1 judgment · 1 rater · 1 item · 2 conditions · 2 finished generations" in page
        assert "units here have 1 rater)" in page
        assert "in 1 of 1 decisive verdict (" in page
        assert "1 judgment from 1 rater." in results
    else:
        assert "2 judgments · 2 raters · 1 item" in page
        assert "over 1 unit rated at least twice" in page and "(1 verdict pair)" in page
        assert "over 1 unit rated at least twice" in results
    for text in (page, results):
        assert not re.search(r"\b1 (judgments|raters|items|units|verdicts|rater pairs)\b", text)


def test_the_study_page_computes_the_reports_figures_without_building_the_report(
    users, report_cache
):
    """The study page's fragment built the whole report (models, plots, subgroups: 6.9 s
    for 20 items) on every visit after new data; it computes its figures alone now, by the
    report's functions, so they are the report's numbers."""
    staff, _, _ = users
    study, _ = rated_study(n_items=4, n_raters=2, name="page numbers")  # Pass@1 checked
    client = Client()
    client.force_login(staff)
    html = client.get(reverse("study_results", args=[study.id]), HTTP_HX_REQUEST="true")
    assert html.status_code == 200 and 'id="win-rates"' in html.content.decode()
    assert not report_cache.exists(), "the study page built the whole report"

    summary = json.loads(
        client.get(reverse("study_report_file", args=[study.id, "summary.json"])).content
    )
    numbers = report_build.study_page_numbers(study)
    for key in ("counts", "counting", "agreement", "preference_note", "sequential"):
        assert numbers[key] == summary[key], key
    assert numbers["preference"]["pairs"] == summary["preference"]["pairs"]
    shown = ["condition", "n_generations", "active_fraction", "tokens_per_s",
             "prefill_tokens_per_s", "decode_tokens_per_s", "latency_s", "peak_rss_mib",
             "pass_at_1", "pass_at_1_ci", "n_passed", "n_checked", "outcomes"]
    for page_row, report_row in zip(numbers["conditions"], summary["conditions"], strict=True):
        assert {k: page_row[k] for k in shown} == {k: report_row[k] for k in shown}


def test_prefill_and_decode_speeds_are_reported_apart_from_the_pooled_tokens_per_s(
    tmp_path, users
):
    """A long prompt's forward is not decode: each condition shows prefill tokens/s (prompt
    tokens over the prompt's forward) and decode tokens/s (one over the mean decode step)
    beside the pooled tokens/s, on the page, in the report and in generations.csv; an output
    whose telemetry has neither shows none."""
    study, _ = rated_study(n_items=3, n_raters=1, name="prefill",
                           conditions={k: SWEEP[k] for k in ("dense", "static 65%")},
                           design="vs_first")
    generations = Generation.objects.filter(item__study=study).select_related("condition")
    for g in generations:
        dense = g.condition.name == "dense"
        g.prompt_tokens = 400
        g.telemetry = {"prefill_s": 0.5, "decode_latency_s_per_token": 0.05 if dense else 0.04}
        g.save()
    old = generations.filter(condition__name="dense").order_by("id").first()
    old.prompt_tokens, old.telemetry = None, {}  # stored before telemetry had them
    old.save()
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["condition"]: r for r in summary["conditions"]}
    assert rows["dense"]["prefill_tokens_per_s"] == pytest.approx(800)
    assert rows["dense"]["decode_tokens_per_s"] == pytest.approx(20)
    assert rows["static 65%"]["decode_tokens_per_s"] == pytest.approx(25)
    assert rows["static 65%"]["prefill_tokens_per_s_ci"] is None, "all equal: no width"
    exported = list(csv.DictReader((tmp_path / "generations.csv").open()))
    lacking = next(r for r in exported if r["generation"] == str(old.id))
    assert (lacking["prefill_tokens_per_s"], lacking["decode_tokens_per_s"]) == ("", "")
    assert {r["decode_tokens_per_s"] for r in exported} - {""} == {"20.0", "25.0"}
    html = (tmp_path / "report.html").read_text()
    cells = re.findall(r'<td class="(prefill|decode)-speed">([^<]*)</td>', html)
    assert cells == [("prefill", "800.0"), ("decode", "20.0"),
                     ("prefill", "800.0"), ("decode", "25.0")]
    client = Client()
    client.force_login(users[0])
    page = client.get(reverse("study_results", args=[study.id]), HTTP_HX_REQUEST="true")
    assert re.findall(r'<td class="(prefill|decode)-speed">([^<]*)</td>',
                      page.content.decode()) == cells
    assert 'class="model"' not in page.content.decode(), "one model: no model column"


def test_a_study_of_two_models_and_an_alignment_vector_is_reported_by_model(tmp_path, users):
    """Base and aligned models (and the point halfway along the alignment vector) under dense
    and one threshold: the report draws a curve per model, puts them in a model × policy
    table, tests whether the aligned model keeps more neurons at the threshold, and the
    exports name each output's model and fingerprint. Raters never see any of it."""
    base = ModelEntry.objects.create(key="smol", path="/models/smol", status="valid",
                                     description={"fingerprint": "f-smol"})
    dpo = ModelEntry.objects.create(key="smol-dpo", path="/models/smol-dpo", status="valid",
                                    description={"fingerprint": "f-dpo"})
    static = {"kind": "static", "threshold": 0.1}
    study, raters = rated_study(n_items=6, n_raters=1, name="by model", design="vs_first",
                                conditions={
                                    "smol dense": ({"kind": "dense"}, 1.0, 10.0, 0.0, 0.6),
                                    "smol t=0.1": (static, 0.60, 14.0, -0.2, 0.5),
                                    "dpo dense": ({"kind": "dense"}, 1.0, 10.0, 0.0, 0.6),
                                    "dpo t=0.1": (static, 0.50, 15.0, -0.3, 0.5),
                                    "half t=0.1": (static, 0.55, 14.5, -0.2, 0.5),
                                })
    conditions = Condition.objects.filter(study=study)
    conditions.filter(name__startswith="smol").update(model=base)
    conditions.filter(name__startswith="dpo").update(model=dpo)
    conditions.filter(name="half t=0.1").update(model=base, aligned_model=dpo,
                                                alignment_lambda=0.5)
    fingerprints = {"smol": "f-smol", "dpo ": "f-dpo", "half": "f-merged-0.5"}
    for g in Generation.objects.filter(item__study=study).select_related("condition"):
        g.model_fingerprint = next(f for prefix, f in fingerprints.items()
                                   if g.condition.name.startswith(prefix.strip()))
        g.save()
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "0")
    summary = json.loads((tmp_path / "summary.json").read_text())
    by_model = summary["by_model"]
    assert [(m["model"], m["fingerprints"]) for m in by_model["models"]] == [
        ("smol", ["f-smol"]), ("smol-dpo", ["f-dpo"]), ("smol→smol-dpo@0.5", ["f-merged-0.5"])]
    assert [(r["model"], r["condition"]) for r in by_model["table"]] == [
        ("smol", "smol dense"), ("smol-dpo", "dpo dense"), ("smol", "smol t=0.1"),
        ("smol-dpo", "dpo t=0.1"), ("smol→smol-dpo@0.5", "half t=0.1")]
    tests = {t["model"]: t for t in by_model["sparsity"]}
    assert set(tests) == {"smol-dpo", "smol→smol-dpo@0.5"}
    assert tests["smol-dpo"]["reference_model"] == "smol"
    assert tests["smol-dpo"]["estimate"] == pytest.approx(0.10, abs=0.02)
    assert tests["smol-dpo"]["answer"] == "fewer", "dpo keeps fewer neurons at t=0.1"
    rows = {r["condition"]: r for r in summary["conditions"]}
    assert rows["dpo t=0.1"]["dense_condition"] == "dpo dense"
    assert rows["dpo t=0.1"]["series"] == "static · smol-dpo"
    html = (tmp_path / "report.html").read_text()
    assert 'id="models-section"' in html and 'id="model-sparsity-tests"' in html
    assert "smol→smol-dpo@0.5" in html and "f-merged-0.5" in html
    exported = list(csv.DictReader((tmp_path / "generations.csv").open()))
    assert {(r["condition"], r["model"], r["model_fingerprint"]) for r in exported} == {
        ("smol dense", "smol", "f-smol"), ("smol t=0.1", "smol", "f-smol"),
        ("dpo dense", "smol-dpo", "f-dpo"), ("dpo t=0.1", "smol-dpo", "f-dpo"),
        ("half t=0.1", "smol→smol-dpo@0.5", "f-merged-0.5")}
    staff = Client()
    staff.force_login(users[0])
    results = staff.get(reverse("study_results", args=[study.id]), HTTP_HX_REQUEST="true")
    assert '<td class="model">smol→smol-dpo@0.5</td>' in results.content.decode()
    judged = list(csv.DictReader((tmp_path / "judgments.csv").open()))
    assert {(r["condition_b"], r["model_b"]) for r in judged} == {
        ("smol t=0.1", "smol"), ("dpo dense", "smol-dpo"), ("dpo t=0.1", "smol-dpo"),
        ("half t=0.1", "smol→smol-dpo@0.5")}
    assert {r["model_a"] for r in judged} == {"smol"}, "vs_first: the first condition's"
    # The rater's page names no model.
    client = Client()
    client.force_login(raters[0])
    page = client.get(reverse("rate", args=[study.id]))
    assert page.status_code in (200, 302)
    shown = page.content.decode()
    assert not any(word in shown for word in ("smol", "f-dpo", "/models/"))


def test_a_check_that_never_ran_is_counted_beside_pass_at_1_and_exported(users, monkeypatch):
    """A check whose job failed twice (the worker died each time) has no verdict: Pass@1 leaves
    it out and the report says so, per condition and per output, instead of shrinking the
    denominator silently."""
    monkeypatch.setattr("reports.build.REPORT_BOOTSTRAP", 0)
    study, _ = rated_study(n_items=2, n_raters=1, name="lost check")
    generation = Generation.objects.filter(item__study=study).order_by("id").first()
    before = report_build.report_fingerprint(study, bootstrap=0, seed=0)
    Execution.objects.filter(generation=generation).delete()
    ExecutionJob.objects.update_or_create(
        generation=generation,
        defaults={"status": ExecutionJob.Status.FAILED, "error": "gave up after 2 tries"},
    )
    assert report_build.report_fingerprint(study, bootstrap=0, seed=0) != before
    report = report_build.study_report(study)
    name = generation.condition.name
    row = next(r for r in report.summary["conditions"] if r["condition"] == name)
    assert row["outcomes"].get(NOT_RUN) == 1
    assert row["n_checked"] == 1, "the unchecked output counted as checked"
    lost = next(g for g in report.generations if g["generation"] == generation.id)
    assert lost["outcome"] == NOT_RUN and lost["passed"] is None
    assert NOT_RUN in report_build.render_report_html(report)


def test_generations_carry_provenance_and_speed_is_paired_only_within_a_machine(tmp_path):
    study, _ = rated_study(n_items=4, n_raters=1, name="machines",
                           conditions={k: SWEEP[k] for k in ("dense", "static 65%")},
                           design="vs_first")
    facts = {"cpu_model": "Test CPU", "threads": 2, "gpu_name": "", "torch_version": "2.x",
             "weight_format": "torch.float32 from .gguf", "kernel_path": "lean decoder"}
    first_item = study.items.order_by("id").first()
    for g in Generation.objects.filter(item__study=study).select_related("condition"):
        # Dense ran the first item on the slow host only; the sparse condition ran every
        # item on the fast one, so only the other three items pair up.
        slow = g.condition.name == "dense" and g.item_id == first_item.id
        g.provenance = {**facts, "host": "slow" if slow else "fast"}
        g.rss_start_bytes = g.peak_rss_bytes - 2**20
        g.save()
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "40")
    summary = json.loads((tmp_path / "summary.json").read_text())
    sparse = next(r for r in summary["conditions"] if r["condition"] == "static 65%")
    speed = sparse["tokens_per_s_vs_dense"]
    assert speed["n_pairs"] == 3 and speed["machines"] == [
        "fast / Test CPU / 2 threads / 2.x / torch.float32 from .gguf"]
    assert speed["ci"][0] < 18 / 10 * 1.1 and speed["ci"][1] > 18 / 10 * 0.9
    assert sparse["rss_increase_mib"] == pytest.approx(1.0)
    assert {m["generations"] for m in summary["machines"]} == {1, 7}
    rows = list(csv.DictReader((tmp_path / "generations.csv").open()))
    assert {"host", "cpu_model", "threads", "gpu_name", "torch_version", "weight_format",
            "kernel_path", "machine", "rss_start_bytes", "rss_increase_bytes"} <= set(rows[0])
    assert {r["host"] for r in rows} == {"slow", "fast"}
    assert {r["rss_increase_bytes"] for r in rows} == {str(2**20)}
    html = (tmp_path / "report.html").read_text()
    assert 'id="machines"' in html and "no timing is pooled across them" in html
    memory = next(s for f in summary["findings"]["families"] for s in f["sentences"]
                  if s["metric"] == "rss_increase_mib")
    assert memory["text"].startswith("Memory added over the worker's resident set at the "
                                     "generation's start (MiB) goes from 1.0 (dense) to 1.0")


def test_divergence_reaches_the_report_plotted_and_related_to_preference(tmp_path):
    study, _ = rated_study(n_items=5, n_raters=2, name="divergence",
                           conditions={k: SWEEP[k] for k in ("dense", "static 20%", "static 40%",
                                                              "static 55%")},
                           design="vs_first")
    kl = {"static 20%": 0.02, "static 40%": 0.08, "static 55%": 0.3}
    for g in Generation.objects.filter(item__study=study).select_related("condition"):
        if g.condition.name in kl:
            value = kl[g.condition.name] * (1 + g.item_id % 3)
            g.telemetry = {**g.telemetry, "kl_from_dense": value,
                           "top1_agreement_with_dense": 1 - value}
            g.save()
    call_command("study_report", study.id, "--out", str(tmp_path), "--bootstrap", "60")
    summary = json.loads((tmp_path / "summary.json").read_text())
    level = summary["divergence"]["condition_level"]
    assert [p["condition"] for p in level["points"]] == ["static 20%", "static 40%", "static 55%"]
    rows = {r["condition"]: r for r in summary["conditions"]}
    for point in level["points"]:  # one number, one computation: the conditions table's
        row = rows[point["condition"]]
        assert point["kl_from_dense"] == pytest.approx(row["kl_from_dense"])
        assert point["win_rate_vs_dense"] == pytest.approx(row["win_rate_vs_dense"])
    assert level["correlation"] is not None and level["slope_ci"] is not None
    html = (tmp_path / "report.html").read_text()
    assert 'id="plot-divergence"' in html and 'id="divergence-preference"' in html
    assert summary["divergence"]["item_level"]["n_points"] == 15
