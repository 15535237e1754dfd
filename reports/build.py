"""The study report: built from the tables of `reports.study_tables` by `analysis.report`,
rendered to its files (HTML, CSV, JSON), and cached per state of the study's data."""

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import Length
from django.template.loader import render_to_string
from django.utils import timezone

from analysis.export import write_csv
from analysis.pluralism import PERMUTATIONS
from analysis.report import build_report, report_figures, study_page_summary
from analysis.style import style_columns
from annotations import selectors
from annotations.models import (
    CriterionRating,
    Execution,
    ExecutionJob,
    Generation,
    GoldAnswer,
    Judgment,
    Study,
)
from reports.study_tables import (
    GENERATION_EXPORT,
    JUDGMENT_EXPORT,
    RATING_EXPORT,
    counting_summary,
    criterion_ratings_table,
    example_outputs,
    generation_rows,
    judgment_rows,
    profile_table,
    rating_rows,
)

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
    "ratings.csv",
    "subgroups.csv",
    "judgments.json",
    "summary.json",
)
# What each file holds, for the report's download box (report.zip holds them all).
FILE_NOTES = {
    "report.html": "this report, one self-contained file",
    "judgments.csv": "one row per verdict: pair, rater pseudonym, sides, choice, rationale, "
    "gold flag, time on task",
    "generations.csv": "one row per output: condition, text, telemetry, Pass@1 check",
    "ratings.csv": "the Likert ratings, long format: judgment, criterion, side, value, and "
    "whether the judgment is a gold check and whether it counts",
    "subgroups.csv": "rater subgroup statistics (aggregates only)",
    "judgments.json": "the verdicts with their Likert ratings nested",
    "summary.json": "every number of this report",
    "report.zip": "all of the above in one archive",
}


@dataclass
class StudyReport:
    """Everything the report files are made of: the numbers, the plots and the raw rows
    (raters already pseudonymized)."""

    study: Study
    summary: dict
    figures: dict[str, str]
    judgments: list[dict]
    ratings: list[dict]
    generations: list[dict]
    examples: list[dict]


@dataclass
class _Tables:
    """What the statistics of a study read: every judgment (raters pseudonymized, with
    ``counted``) and generation as export rows, the counting rule's outcome, and the
    conditions in study order."""

    names: dict[int, str]
    selection: selectors.JudgmentsForAnalysis
    counted: set[int]
    read: set[int]
    judgments: list[dict]
    generations: list[dict]
    conditions: list[dict]

    def judgments_read(self) -> pd.DataFrame:
        """The counted judgments and the kept raters' gold checks: what the statistics
        read (the exports hold every judgment, with ``counted``)."""
        return pd.DataFrame(
            [j for j in self.judgments if j["judgment"] in self.read], columns=JUDGMENT_EXPORT
        )

    def generations_done(self) -> pd.DataFrame:
        return pd.DataFrame(
            [g for g in self.generations if g["status"] == Generation.Status.DONE],
            columns=GENERATION_EXPORT,
        )

    def counting(self) -> dict:
        return counting_summary(self.selection, self.names, counted=len(self.counted))


def _tables(study: Study) -> _Tables:
    """Read a study's `_Tables`: which judgments count is
    `selectors.judgments_for_analysis`'s rule."""
    names = selectors.rater_pseudonyms(study)
    selection = selectors.judgments_for_analysis(study)
    counted = set(selection.counted.values_list("id", flat=True))
    conditions = [
        {
            "name": c.name,
            "policy": c.policy,
            "summary": c.summary(),
            "skips_bytes": c.skips_bytes(),
            "bytes_note": c.bytes_note(),
        }
        for c in study.conditions.select_related("calibration").order_by("position", "id")
    ]
    return _Tables(
        names=names,
        selection=selection,
        counted=counted,
        read=counted | set(selection.gold.values_list("id", flat=True)),
        judgments=judgment_rows(study, names, counted=counted),
        generations=generation_rows(study),
        conditions=conditions,
    )


def study_report(study: Study, *, bootstrap: int | None = None, seed: int = 0) -> StudyReport:
    """The full report of a study: the one function the command and the report page read
    (through `cached_report_files`), so their numbers are identical for the same
    `bootstrap` (default `REPORT_BOOTSTRAP`) and `seed`; the study page's numbers
    (`study_page_numbers`) are its figures by the same functions. Summary ``counting``
    says what the counting rule left out."""
    if bootstrap is None:
        bootstrap = REPORT_BOOTSTRAP
    tables = _tables(study)
    excluded = {r.rater_id for r in tables.selection.excluded}
    kept_names = {rid: name for rid, name in tables.names.items() if rid not in excluded}
    _add_style_columns(tables.judgments, tables.generations)
    summary = build_report(
        tables.judgments_read(),
        tables.generations_done(),
        tables.conditions,
        criterion_ratings=criterion_ratings_table(study),
        profiles=profile_table(study, kept_names),
        profile_questions=study.profile_questions,
        bootstrap=bootstrap,
        seed=seed,
    )
    summary = _json_ready(
        {
            # Its item count: the counts below are the items with an output or a verdict.
            "study": {"id": study.id, "name": study.name, "items": study.items.count()},
            "counting": tables.counting(),
            **summary,
        }
    )
    return StudyReport(
        study=study,
        summary=summary,
        figures=report_figures(summary),
        judgments=tables.judgments,
        ratings=rating_rows(study, tables.judgments),
        generations=tables.generations,
        examples=example_outputs(study, tables.generations),
    )


def study_page_numbers(study: Study, *, bootstrap: int | None = None, seed: int = 0) -> dict:
    """The figures the study page shows (`analysis.report.study_page_summary`, with
    ``counting``), computed now from the same tables and settings as the report: the
    report's numbers in a fraction of a second, never stale (the report itself builds the
    models, plots and subgroups too, seconds to minutes)."""
    if bootstrap is None:
        bootstrap = REPORT_BOOTSTRAP
    tables = _tables(study)
    summary = study_page_summary(
        tables.judgments_read(),
        tables.generations_done(),
        tables.conditions,
        bootstrap=bootstrap,
        seed=seed,
    )
    return _json_ready({"counting": tables.counting(), **summary})


def _add_style_columns(judgments: list[dict], generations: list[dict]) -> None:
    """Each judgment's ``CONTROL_a`` / ``CONTROL_b`` style values (`style_columns`: length,
    code blocks, markdown, tests passed, those the outputs let us measure), so the export
    reproduces the style control with ``python -m analysis preference --control``."""
    styled, controls = style_columns(
        pd.DataFrame(judgments, columns=JUDGMENT_EXPORT),
        pd.DataFrame(generations, columns=GENERATION_EXPORT),
    )
    fields = [f"{control}_{side}" for control in controls for side in ("a", "b")]
    values = styled[fields].astype(object).where(styled[fields].notna(), None)
    for row, extra in zip(judgments, values.to_dict("records"), strict=True):
        row.update(extra)


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
        "reports/report.html",
        {
            "study": report.study,
            "s": report.summary,
            "figures": report.figures,
            "examples": report.examples,
            "files": [(name, FILE_NOTES[name]) for name in (*REPORT_FILES, "report.zip")],
            "generated_at": timezone.now(),
        },
    )


def _style_fields(report: StudyReport) -> list[str]:
    return [key for key in (report.judgments[0] if report.judgments else {}) if key not in
            JUDGMENT_EXPORT]


def report_files(report: StudyReport) -> dict[str, bytes]:
    """The report's files by name (`REPORT_FILES`): the HTML report, the raw judgments and
    generations as formula-safe CSV, the judgments as JSON and every number as JSON."""
    files = {"report.html": render_report_html(report).encode()}
    for name, rows, fields in (
        ("judgments.csv", report.judgments, [*JUDGMENT_EXPORT, *_style_fields(report)]),
        ("generations.csv", report.generations, GENERATION_EXPORT),
        ("ratings.csv", report.ratings, RATING_EXPORT),
    ):
        text = io.StringIO(newline="")
        write_csv(rows, fields, text)
        files[name] = text.getvalue().encode()
    text = io.StringIO(newline="")
    write_csv(subgroup_rows(report.summary["subgroups"]), SUBGROUP_EXPORT, text)
    files["subgroups.csv"] = text.getvalue().encode()
    files["judgments.json"] = json.dumps(_with_ratings(report), indent=1).encode()
    files["summary.json"] = json.dumps(report.summary, indent=1).encode()
    return files


def _with_ratings(report: StudyReport) -> list[dict]:
    """The judgments, each with its Likert ratings as ``{criterion: {"a": v, "b": v}}``."""
    ratings: dict[int, dict] = {}
    for r in report.ratings:
        ratings.setdefault(r["judgment"], {}).setdefault(r["criterion"], {})[r["side"]] = r["value"]
    return [{**j, "ratings": ratings.get(j["judgment"], {})} for j in report.judgments]


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
    """A digest of the statistics (`analysis`), this app's code and the report templates: a
    change to any makes every cached report stale."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent
    code = [*(here.parent / "analysis").glob("*.py"), *here.glob("*.py")]
    for path in sorted([*code, *(here / "templates/reports").glob("*.html")]):
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
        # The worker adds divergence from dense to finished outputs later.
        divergence=Count("id", filter=Q(telemetry__has_key="kl_from_dense")),
    )
    executions = Execution.objects.filter(generation__item__study=study).aggregate(
        n=Count("id"),
        last=Max("id"),
        at=Max("created_at"),
        passed=Count("id", filter=Q(status=Execution.Status.PASSED)),
    )
    checks_not_run = ExecutionJob.objects.filter(
        generation__item__study=study, status=ExecutionJob.Status.FAILED
    ).count()
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
        "enrolments": list(
            study.enrolments.order_by("id").values_list(
                "rater_id", "profile", "blocked_at", "gold_failures"
            )
        ),
        "judgments": judgments,
        "ratings": ratings,
        "generations": generations,
        "executions": executions,
        "checks_not_run": checks_not_run,
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
