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
from django.template.loader import render_to_string
from django.utils import timezone

from analysis.alignment import condition_table
from analysis.export import write_csv
from analysis.pluralism import PERMUTATIONS
from analysis.report import build_report, report_figures, study_page_summary
from analysis.style import style_columns
from annotations.models import Study
from inference.model_info import default_model_path, fingerprint_file
from reports.study_tables import (
    GENERATION_EXPORT,
    JUDGMENT_EXPORT,
    RATING_EXPORT,
    SOURCES,
    read_study,
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


def study_report(study: Study, *, bootstrap: int | None = None, seed: int = 0) -> StudyReport:
    """The full report of a study: the one function the command and the report page read
    (through `cached_report_files`), so their numbers are identical for the same
    `bootstrap` (default `REPORT_BOOTSTRAP`) and `seed`; the study page's numbers
    (`study_page_numbers`) are its figures by the same functions. Summary ``counting``
    says what the counting rule left out."""
    if bootstrap is None:
        bootstrap = REPORT_BOOTSTRAP
    tables = read_study(study)
    _add_style_columns(tables.judgments, tables.generations)
    summary = build_report(
        tables.judgments_read(),
        tables.generations_done(),
        tables.conditions,
        criterion_ratings=tables.criterion_ratings,
        profiles=tables.profiles,
        profile_questions=study.profile_questions,
        judge_verdicts=tables.judge_verdicts(),
        weak_judges=shipped_model_judges(tables.verdicts),
        bootstrap=bootstrap,
        seed=seed,
    )
    summary = _json_ready(
        {
            # Its item count: the counts below are the items with an output or a verdict.
            "study": {"id": study.id, "name": study.name, "items": tables.items},
            "counting": tables.counting(),
            **summary,
        }
    )
    return StudyReport(
        study=study,
        summary=summary,
        figures=report_figures(summary),
        judgments=tables.judgments,
        ratings=tables.ratings,
        generations=tables.generations,
        examples=tables.examples,
    )


def shipped_model_judges(verdicts: list[dict]) -> set[str]:
    """The judges whose endpoint reported the shipped 135M model's weights (by fingerprint,
    which our own server sends): the report calls them weak judges."""
    reported = {v["fingerprint"] for v in verdicts if v["fingerprint"]}
    if not reported:
        return set()
    try:
        shipped = fingerprint_file(default_model_path(), Path(settings.MODEL_CACHE_DIR))
    except FileNotFoundError:  # the shipped model is not installed: no judge can be it
        return set()
    return {v["judge"] for v in verdicts if v["fingerprint"] == shipped}


def condition_sparsity(study: Study) -> list[dict]:
    """Per condition (study order) ``name``, ``summary``, ``target_sparsity`` (None without
    a calibration) and ``sparsity`` achieved while generating (None before an output), by
    the report's `condition_table` on the report's finished generations: the study page's
    and the report's number."""
    tables = read_study(study)
    rows = condition_table(tables.conditions, tables.generations_done(), None)
    return [{"name": r["condition"], "summary": r["summary"],
             "target_sparsity": r["target_sparsity"], "sparsity": r["sparsity"]} for r in rows]


def study_page_numbers(study: Study, *, bootstrap: int | None = None, seed: int = 0) -> dict:
    """The figures the study page shows (`analysis.report.study_page_summary`, with
    ``counting``), computed now from the same tables and settings as the report: the
    report's numbers in a fraction of a second, never stale (the report itself builds the
    models, plots and subgroups too, seconds to minutes)."""
    if bootstrap is None:
        bootstrap = REPORT_BOOTSTRAP
    tables = read_study(study)
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
    """A digest of everything a report reads: each table `read_study` reads (its declared
    `SOURCES`: aggregates of the large ones, the small ones whole), the study's own fields,
    the analysis settings and `_code_version`. Aggregates, so it costs a few queries, not a
    read of the study."""
    state = {name: source.state(study) for name, source in SOURCES.items()}
    state["study"] = [study.id, study.created_at, study.name, study.profile_questions]
    state["settings"] = [bootstrap, seed, PERMUTATIONS, _code_version()]
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
