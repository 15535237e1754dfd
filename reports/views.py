"""Staff pages: a study's report and its files (the same numbers as `manage.py study_report`),
the study page's results fragment, and the setup page's conditions with their sparsity."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from annotations.models import Study
from reports.build import (
    REPORT_FILES,
    cached_report_files,
    condition_sparsity,
    report_zip,
    study_page_numbers,
)

CONTENT_TYPES = {
    "html": "text/html; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "zip": "application/zip",
}


def _files(study_id: int) -> tuple[Study, dict[str, bytes]]:
    study = get_object_or_404(Study, id=study_id)
    # Built once per state of the study's data (see `cached_report_files`), not per request.
    return study, cached_report_files(study)


@staff_member_required
@require_GET
def study_report_page(request: HttpRequest, study_id: int) -> HttpResponse:
    _, files = _files(study_id)
    response = HttpResponse(files["report.html"], content_type=CONTENT_TYPES["html"])
    # One self-contained file (it is also downloaded): its styles are inline; no script.
    response.csp_update = {"style-src": "'self' 'unsafe-inline'"}
    return response


@staff_member_required
@require_GET
def study_report_file(request: HttpRequest, study_id: int, name: str) -> HttpResponse:
    if name not in (*REPORT_FILES, "report.zip"):
        raise Http404("no such report file")
    study, files = _files(study_id)
    content = report_zip(files) if name == "report.zip" else files[name]
    response = HttpResponse(content, content_type=CONTENT_TYPES[name.rsplit(".", 1)[1]])
    response["Content-Disposition"] = f'attachment; filename="study-{study.id}-{name}"'
    return response


@staff_member_required
@require_GET
def study_results_fragment(request: HttpRequest, study_id: int) -> HttpResponse:
    """The study page's telemetry, agreement, win rates and what the counting rule left
    out: the report's numbers by the report's functions (`study_page_numbers`), computed
    now in a fraction of a second, not the whole report (seconds: its models and plots).
    The page loads it with htmx, so `annotations` needs no import of this app."""
    study = get_object_or_404(Study, id=study_id)
    context = {"study": study, "s": study_page_numbers(study)}
    return render(request, "reports/_study_results.html", context)


@staff_member_required
@require_GET
def study_condition_sparsity(request: HttpRequest, study_id: int) -> HttpResponse:
    """The setup page's condition list with each condition's calibration target beside the
    sparsity it achieved while generating ("target 50 % · achieved 56.6 %"), the study
    page's number (`condition_sparsity`). Loaded by htmx, as the study page's results."""
    study = get_object_or_404(Study, id=study_id)
    context = {"entries": condition_sparsity(study)}
    return render(request, "annotations/_condition_summaries.html", context)
