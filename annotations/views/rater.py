"""Rater pages: the study list, the blind pairwise page and the judgment submit."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotations import selectors, services
from annotations.models import Assignment, Judgment, Study


def _get_study_for_rater(request: HttpRequest, study_id: int) -> Study:
    # Only studies the rater is enrolled in and that are open; anything else 404s.
    return get_object_or_404(Study, id=study_id, raters=request.user, status=Study.Status.OPEN)


def _get_assignment_for_rater(request: HttpRequest, assignment_id: int) -> Assignment:
    return get_object_or_404(
        Assignment.objects.select_related("pair__study", "pair__item"),
        id=assignment_id,
        rater=request.user,
    )


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_staff:
        return redirect("study_list")
    studies = selectors.studies_for_rater(request.user)
    rows = [(s, selectors.rater_progress(s, request.user)) for s in studies]
    return render(request, "annotations/home.html", {"rows": rows})


def _render_pair(request: HttpRequest, study: Study, *, fragment: bool) -> HttpResponse:
    assignment = services.assignment_next(study=study, rater=request.user)
    context = {
        "study": study,
        "assignment": assignment,
        "left": assignment.generation_on("left") if assignment else None,
        "right": assignment.generation_on("right") if assignment else None,
        "progress": selectors.rater_progress(study, request.user),
    }
    template = "annotations/rate.html#pair" if fragment else "annotations/rate.html"
    return render(request, template, context)


@login_required
@require_GET
def rate(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _get_study_for_rater(request, study_id)
    return _render_pair(request, study, fragment=bool(request.htmx))


@login_required
@require_POST
def judge(request: HttpRequest, assignment_id: int) -> HttpResponse:
    assignment = _get_assignment_for_rater(request, assignment_id)
    study = assignment.pair.study
    if not study.is_open():
        return HttpResponseBadRequest("This study is closed; your choice was not recorded.")
    choice = request.POST.get("choice", "")
    if choice not in Judgment.Choice.values:
        return HttpResponseBadRequest("Choose left, right or tie.")
    try:
        time_on_task_ms = int(request.POST.get("time_on_task_ms", ""))
    except ValueError:
        time_on_task_ms = None
    if time_on_task_ms is not None and not 0 <= time_on_task_ms < 24 * 3600 * 1000:
        time_on_task_ms = None
    services.judgment_submit(assignment=assignment, choice=choice, time_on_task_ms=time_on_task_ms)
    if not request.htmx:
        return redirect("rate", study_id=study.id)
    return _render_pair(request, study, fragment=True)


