"""Adapter from a study in the database to the plain tables the statistics read, and the
study report's files.

The only module of `analysis` that knows Django; the statistics stay pure."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import math
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db.models import Avg, Count, Max, Q, Sum
from django.db.models.functions import Length
from django.template.loader import render_to_string
from django.utils import timezone

from analysis.agreement import agreement_summary, choice_codes
from analysis.export import write_csv
from analysis.pluralism import PERMUTATIONS
from analysis.preference import preference_summary
from analysis.report import build_report, report_figures
from analysis.tables import InputError
from annotations.models import (
    CriterionRating,
    Enrolment,
    Execution,
    Generation,
    GoldAnswer,
    Judgment,
    Study,
)
from annotations.passk import pass_at_k_over_problems


def judgments_table(study: Study) -> pd.DataFrame:
    """One row per judgment: item, rater, condition_a, condition_b, winner, side_a.

    condition_a is the condition that comes first in the study's order; side_a is
    where its output was shown to the rater (for the position-bias test)."""
    # Gold (attention-check) pairs test the rater, not the conditions: left out.
    rows = Judgment.objects.filter(
        assignment__pair__study=study, assignment__pair__gold__isnull=True
    ).values_list(
        "assignment__pair__item__task_id",
        "assignment__rater_id",
        "assignment__pair__generation_a__condition__name",
        "assignment__pair__generation_b__condition__name",
        "winner",
        "assignment__a_on_left",
    )
    return pd.DataFrame(
        [
            {
                "item": item,
                "rater": str(rater),
                "condition_a": a,
                "condition_b": b,
                "winner": winner,
                "side_a": "left" if a_on_left else "right",
            }
            for item, rater, a, b, winner, a_on_left in rows
        ],
        columns=["item", "rater", "condition_a", "condition_b", "winner", "side_a"],
    )


@dataclass
class StudyResults:
    n_judgments: int
    n_raters: int
    alpha: float | None = None
    alpha_ci: tuple[float, float] | None = None
    alpha_units: int = 0
    alpha_reason: str = ""
    pairs: list[dict] = field(default_factory=list)
    telemetry: list[dict] = field(default_factory=list)


def pass_at_1(study: Study) -> dict[str, dict]:
    """Pass@1 per condition name over the sandbox checks done so far.

    Out: {condition: {"pass_at_1", "n_problems", "n_passed", "n_checked"}}; conditions
    with no check yet are absent."""
    outcomes: dict[str, list[tuple[str, bool]]] = {}
    for condition, task_id, status in Execution.objects.filter(
        generation__item__study=study
    ).values_list("generation__condition__name", "generation__item__task_id", "status"):
        outcomes.setdefault(condition, []).append((task_id, status == Execution.Status.PASSED))
    result = {}
    for condition, rows in outcomes.items():
        estimate = pass_at_k_over_problems(rows, k=1)
        result[condition] = {
            "pass_at_1": estimate.pass_at_k,
            "n_problems": estimate.n_problems,
            "n_passed": estimate.n_passed,
            "n_checked": estimate.n_samples,
        }
    return result


def telemetry_table(study: Study) -> list[dict]:
    """Mean engine telemetry and Pass@1 of the finished generations, per condition."""
    passes = pass_at_1(study)
    rows = (
        Generation.objects.filter(item__study=study, status=Generation.Status.DONE)
        .values("condition__name", "condition__position")
        .annotate(
            n=Count("id"),
            active_fraction=Avg("active_fraction"),
            tokens_per_s=Avg("tokens_per_s"),
            latency_s=Avg("latency_s"),
            peak_rss_bytes=Avg("peak_rss_bytes"),
        )
        .order_by("condition__position")
    )
    return [
        {
            "condition": r["condition__name"],
            "n": r["n"],
            "active_fraction": r["active_fraction"],
            "tokens_per_s": r["tokens_per_s"],
            "latency_s": r["latency_s"],
            "peak_rss_mib": (r["peak_rss_bytes"] or 0) / 2**20,
            "pass_at_1": passes.get(r["condition__name"]),
        }
        for r in rows
    ]


def study_results(study: Study, *, bootstrap: int = 500, seed: int = 0) -> StudyResults:
    """Agreement and win rates of a study's judgments, for the study page."""
    table = judgments_table(study)
    results = StudyResults(
        n_judgments=len(table),
        n_raters=table["rater"].nunique(),
        telemetry=telemetry_table(study),
    )
    if table.empty:
        results.alpha_reason = "no judgments yet"
        return results
    order = list(study.conditions.order_by("position", "id").values_list("name", flat=True))
    agreement = agreement_summary(
        choice_codes(table, order), "nominal", bootstrap=bootstrap, seed=seed
    )
    results.alpha = agreement["alpha"]
    results.alpha_ci = agreement.get("alpha_ci")
    results.alpha_units = agreement["n_pairable_units"]
    results.alpha_reason = agreement.get("alpha_note") or ""
    try:
        preference = preference_summary(table, bootstrap=bootstrap, seed=seed)
    except InputError as exc:
        results.alpha_reason = results.alpha_reason or str(exc)
        return results
    results.pairs = preference["pairs"]
    return results


JUDGMENT_EXPORT = [
    "judgment",
    "item",
    "rater",
    "condition_a",
    "condition_b",
    "generation_a",
    "generation_b",
    "side_a",
    "choice",
    "winner",
    "both_bad",
    "gold",
    "gold_correct",
    "time_on_task_ms",
    "created_at",
]
GENERATION_EXPORT = [
    "generation",
    "item",
    "condition",
    "policy",
    "sample_index",
    "status",
    "text",
    "new_tokens",
    "latency_s",
    "tokens_per_s",
    "peak_rss_bytes",
    "active_fraction",
    "execution_status",
    "passed",
]
# Bootstrap resamples of a report unless told otherwise (the command's --bootstrap).
REPORT_BOOTSTRAP = 1000
SUBGROUP_EXPORT = [
    "grouping",
    "group",
    "pair",
    "sparsity_gap",
    "n_raters",
    "n",
    "sparser_won",
    "share",
    "share_ci_low",
    "share_ci_high",
    "odds_ratio_per_0_1",
]
REPORT_FILES = (
    "report.html",
    "judgments.csv",
    "generations.csv",
    "subgroups.csv",
    "judgments.json",
    "summary.json",
)


@dataclass
class StudyReport:
    """Everything the report files are made of: the numbers, the plots and the raw rows
    (raters already pseudonymized)."""

    study: Study
    summary: dict
    figures: dict[str, str]
    judgments: list[dict]
    generations: list[dict]
    examples: list[dict]


def rater_pseudonyms(rater_ids) -> dict:
    """rater id → ``rater-1`` … ``rater-n`` in id order: stable within one report, and no
    username or id leaves the database."""
    return {rid: f"rater-{i}" for i, rid in enumerate(sorted(set(rater_ids)), start=1)}


def _judgment_rows(study: Study, names: dict) -> list[dict]:
    rows = list(
        Judgment.objects.filter(assignment__pair__study=study)
        .order_by("created_at", "id")
        .values(
            "id",
            "choice",
            "winner",
            "both_bad",
            "gold_correct",
            "time_on_task_ms",
            "created_at",
            "assignment__pair__gold",
            "assignment__rater_id",
            "assignment__a_on_left",
            "assignment__pair__item__task_id",
            "assignment__pair__generation_a_id",
            "assignment__pair__generation_b_id",
            "assignment__pair__generation_a__condition__name",
            "assignment__pair__generation_b__condition__name",
        )
    )
    return [
        {
            "judgment": r["id"],
            "item": r["assignment__pair__item__task_id"],
            "rater": names[r["assignment__rater_id"]],
            "condition_a": r["assignment__pair__generation_a__condition__name"],
            "condition_b": r["assignment__pair__generation_b__condition__name"],
            "generation_a": r["assignment__pair__generation_a_id"],
            "generation_b": r["assignment__pair__generation_b_id"],
            "side_a": "left" if r["assignment__a_on_left"] else "right",
            "choice": r["choice"],
            "winner": r["winner"],
            "both_bad": r["both_bad"],
            "gold": r["assignment__pair__gold"] is not None,
            "gold_correct": r["gold_correct"],
            "time_on_task_ms": r["time_on_task_ms"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]


def _generation_rows(study: Study) -> list[dict]:
    generations = (
        Generation.objects.filter(item__study=study)
        .select_related("item", "condition", "execution")
        .order_by("item_id", "condition__position", "sample_index", "id")
    )
    rows = []
    for g in generations:
        execution = getattr(g, "execution", None)
        rows.append(
            {
                "generation": g.id,
                "item": g.item.task_id,
                "condition": g.condition.name,
                "policy": g.condition.policy_text(),
                "sample_index": g.sample_index,
                "status": g.status,
                "text": g.text,
                "new_tokens": g.new_tokens,
                "latency_s": g.latency_s,
                "tokens_per_s": g.tokens_per_s,
                "peak_rss_bytes": g.peak_rss_bytes,
                "active_fraction": g.active_fraction,
                "execution_status": execution.status if execution else None,
                "passed": execution.passed if execution else None,
            }
        )
    return rows


def _examples(study: Study, generations: list[dict], limit: int = 3) -> list[dict]:
    """The first `limit` items with their prompt and each condition's first output."""
    items = list(study.items.order_by("id")[:limit])
    return [
        {
            "item": item.task_id,
            "prompt": item.prompt,
            "outputs": [
                g
                for g in generations
                if g["item"] == item.task_id
                and g["status"] == Generation.Status.DONE
                and g["sample_index"] == 0
            ],
        }
        for item in items
    ]


def study_report(study: Study, *, bootstrap: int | None = None, seed: int = 0) -> StudyReport:
    """The full report of a study: the one function the command and the page both call,
    so their numbers are identical for the same `bootstrap` (default `REPORT_BOOTSTRAP`)
    and `seed`."""
    if bootstrap is None:
        bootstrap = REPORT_BOOTSTRAP
    names = rater_pseudonyms(
        Judgment.objects.filter(assignment__pair__study=study).values_list(
            "assignment__rater_id", flat=True
        )
    )
    judgments = _judgment_rows(study, names)
    generations = _generation_rows(study)
    done = pd.DataFrame(
        [g for g in generations if g["status"] == Generation.Status.DONE],
        columns=GENERATION_EXPORT,
    )
    conditions = [
        {"name": c.name, "policy": c.policy} for c in study.conditions.order_by("position", "id")
    ]
    criterion_ratings = pd.DataFrame(
        CriterionRating.objects.filter(judgment__assignment__pair__study=study).values_list(
            "judgment_id", "criterion__name", "value_a", "value_b"
        ),
        columns=["judgment", "criterion", "value_a", "value_b"],
    )
    summary = build_report(
        pd.DataFrame(judgments, columns=JUDGMENT_EXPORT),
        done,
        conditions,
        criterion_ratings=criterion_ratings,
        profiles=_profile_table(study, names),
        profile_questions=study.profile_questions,
        bootstrap=bootstrap,
        seed=seed,
    )
    summary = _json_ready({"study": {"id": study.id, "name": study.name}, **summary})
    return StudyReport(
        study=study,
        summary=summary,
        figures=report_figures(summary),
        judgments=judgments,
        generations=generations,
        examples=_examples(study, generations),
    )


def _profile_table(study: Study, names: dict) -> pd.DataFrame:
    """``rater, question, answer`` of the raters who judged (by pseudonym). It feeds only
    the subgroup statistics: no report file holds it."""
    rows = [
        (names[rater_id], question, answer)
        for rater_id, profile in Enrolment.objects.filter(
            study=study, rater_id__in=list(names)
        ).values_list("rater_id", "profile")
        if isinstance(profile, dict)
        for question, answer in profile.items()
    ]
    return pd.DataFrame(rows, columns=["rater", "question", "answer"])


def _json_ready(value):
    """Plain JSON types throughout: numpy scalars to Python, nan / inf to None."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_report_html(report: StudyReport) -> str:
    """The self-contained HTML report (plots inline, no external assets). Every text from
    the database goes through the template engine's autoescaping."""
    return render_to_string(
        "annotations/report/report.html",
        {
            "study": report.study,
            "s": report.summary,
            "figures": report.figures,
            "examples": report.examples,
            "generated_at": timezone.now(),
        },
    )


def report_files(report: StudyReport) -> dict[str, bytes]:
    """The report's files by name (`REPORT_FILES`): the HTML report, the raw judgments and
    generations as formula-safe CSV, the judgments as JSON and every number as JSON."""
    files = {"report.html": render_report_html(report).encode()}
    for name, rows, fields in (
        ("judgments.csv", report.judgments, JUDGMENT_EXPORT),
        ("generations.csv", report.generations, GENERATION_EXPORT),
    ):
        text = io.StringIO(newline="")
        write_csv(rows, fields, text)
        files[name] = text.getvalue().encode()
    text = io.StringIO(newline="")
    write_csv(subgroup_rows(report.summary["subgroups"]), SUBGROUP_EXPORT, text)
    files["subgroups.csv"] = text.getvalue().encode()
    files["judgments.json"] = json.dumps(report.judgments, indent=1).encode()
    files["summary.json"] = json.dumps(report.summary, indent=1).encode()
    return files


def subgroup_rows(subgroups: dict) -> list[dict]:
    """The subgroup table: per grouping (profile question, rater clusters) and group, one
    row for all condition pairs (``pair`` = all) and one per pair. Aggregates only: a
    group below the minimum size has its rater count and nothing else."""
    groupings = [(s["name"], s["groups"]) for s in subgroups["profile"]]
    groupings.append(("clusters", subgroups["clusters"]["groups"]))
    rows = []
    for grouping, groups in groupings:
        for group in groups:
            base = {"grouping": grouping, "group": group["group"], "n_raters": group["n_raters"]}
            if "n" not in group:
                rows.append(base)
                continue
            for pair in [{"pair": "all", **group}, *group["pairs"]]:
                low, high = pair["share_ci"]
                rows.append(
                    {
                        **base,
                        "pair": pair["pair"],
                        "sparsity_gap": pair.get("gap"),
                        "n": pair["n"],
                        "sparser_won": pair["sparser_won"],
                        "share": pair["share"],
                        "share_ci_low": low,
                        "share_ci_high": high,
                        "odds_ratio_per_0_1": group["odds_ratio_per_0_1"]
                        if pair["pair"] == "all"
                        else None,
                    }
                )
    return rows


def report_zip(files: dict[str, bytes]) -> bytes:
    """The report's files in one zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# --- The report cache -------------------------------------------------------------------
# A report takes seconds to minutes (bootstraps, the mixed model, permutations); the page
# serves the files of the last build while the study's data and the code are unchanged.


@functools.cache
def _code_version() -> str:
    """A digest of the analysis code and the report templates: a change to either makes
    every cached report stale."""
    digest = hashlib.sha256()
    templates = Path(__file__).resolve().parent.parent / "annotations/templates/annotations/report"
    for path in sorted([*Path(__file__).parent.glob("*.py"), *templates.glob("*.html")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def report_fingerprint(study: Study, *, bootstrap: int, seed: int) -> str:
    """A digest of everything a report reads: counts, largest ids, latest times and sums of
    the rows that can change (judgments, criterion ratings, generations, executions), the
    small tables whole (conditions, criteria, gold answers, enrolments with their profile
    answers), the analysis settings and `_code_version`. Aggregates, so it costs a few
    queries, not a read of the study."""
    judgments = Judgment.objects.filter(assignment__pair__study=study).aggregate(
        n=Count("id"),
        last=Max("id"),
        at=Max("created_at"),
        a=Count("id", filter=Q(winner="a")),
        b=Count("id", filter=Q(winner="b")),
        both_bad=Count("id", filter=Q(both_bad=True)),
        gold_correct=Count("id", filter=Q(gold_correct=True)),
    )
    ratings = CriterionRating.objects.filter(judgment__assignment__pair__study=study).aggregate(
        n=Count("id"), last=Max("id"), a=Sum("value_a"), b=Sum("value_b")
    )
    generations = Generation.objects.filter(item__study=study).aggregate(
        n=Count("id"),
        last=Max("id"),
        at=Max("finished_at"),
        done=Count("id", filter=Q(status=Generation.Status.DONE)),
        active=Sum("active_fraction"),
        speed=Sum("tokens_per_s"),
        latency=Sum("latency_s"),
        rss=Sum("peak_rss_bytes"),
        tokens=Sum("new_tokens"),
        text=Sum(Length("text")),
    )
    executions = Execution.objects.filter(generation__item__study=study).aggregate(
        n=Count("id"),
        last=Max("id"),
        at=Max("created_at"),
        passed=Count("id", filter=Q(status=Execution.Status.PASSED)),
    )
    state = {
        "study": [study.id, study.created_at, study.name, study.profile_questions],
        "items": study.items.aggregate(n=Count("id"), last=Max("id")),
        "conditions": list(study.conditions.values_list("id", "name", "policy", "position")),
        "criteria": list(study.criteria.values_list("id", "name")),
        "gold": list(
            GoldAnswer.objects.filter(pair__study=study)
            .order_by("id")
            .values_list("pair_id", "winner")
        ),
        "enrolments": list(study.enrolments.order_by("id").values_list("rater_id", "profile")),
        "judgments": judgments,
        "ratings": ratings,
        "generations": generations,
        "executions": executions,
        "settings": [bootstrap, seed, PERMUTATIONS, _code_version()],
    }
    text = json.dumps(_rounded(state), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _rounded(value):
    """Floats to 12 significant digits: a database may sum floats in any order (Postgres
    in parallel workers), and the last bits must not make a new fingerprint."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return float(f"{value:.12g}") if isinstance(value, float) else value


def cached_report_files(
    study: Study, *, bootstrap: int | None = None, seed: int = 0
) -> dict[str, bytes]:
    """The report's files (`report_files`), built once per `report_fingerprint` and kept
    under ``VAR_DIR/reports/<study id>/<fingerprint>/``; older builds of the study are
    removed. Concurrent first requests wait on a file lock, so only one builds."""
    if bootstrap is None:
        bootstrap = REPORT_BOOTSTRAP
    root = Path(settings.VAR_DIR) / "reports" / str(study.id)
    folder = root / report_fingerprint(study, bootstrap=bootstrap, seed=seed)
    files = _read_report(folder)
    if files is not None:
        return files
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        files = _read_report(folder)  # built by whoever held the lock before us
        if files is not None:
            return files
        files = report_files(study_report(study, bootstrap=bootstrap, seed=seed))
        building = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
        for name, content in files.items():
            (building / name).write_bytes(content)
        # Older builds go, and the leftovers of a build that crashed.
        for old in root.iterdir():
            if old.is_dir() and old != building:
                shutil.rmtree(old, ignore_errors=True)
        building.rename(folder)  # atomic: a reader sees a whole build or none
    return files


def _read_report(folder: Path) -> dict[str, bytes] | None:
    try:
        return {name: (folder / name).read_bytes() for name in REPORT_FILES}
    except FileNotFoundError:  # not built yet, or removed by a newer build meanwhile
        return None
