"""Rater and staff pages. Views stay thin: access checks, a service call, a template."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from analysis.study import study_results
from annotations import selectors, services
from annotations.models import Assignment, Judgment, Study


def _get_study_for_rater(request: HttpRequest, study_id: int) -> Study:
    # Only studies the rater is enrolled in and that are open; anything else 404s.
    return get_object_or_404(
        Study, id=study_id, raters=request.user, status=Study.Status.OPEN
    )


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


@staff_member_required
@require_GET
def study_list(request: HttpRequest) -> HttpResponse:
    studies = Study.objects.order_by("-created_at")
    rows = [(s, selectors.study_progress(s)) for s in studies]
    return render(request, "annotations/study_list.html", {"rows": rows})


@staff_member_required
@require_GET
def study_detail(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id)
    context = {
        "study": study,
        "progress": selectors.study_progress(study),
        "results": study_results(study),
    }
    return render(request, "annotations/study_detail.html", context)


@staff_member_required
@require_GET
def study_progress(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id)
    progress = selectors.study_progress(study)
    response = render(
        request,
        "annotations/study_detail.html#progress",
        {"study": study, "progress": progress},
    )
    if progress.finished:
        # Last fragment: tells htmx to stop polling (status 286).
        response = HttpResponseStopPolling(response.content)
    return response


@staff_member_required
@require_POST
def study_generate(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id)
    services.generations_create(study=study)
    services.generations_enqueue(study=study)
    return redirect("study_detail", study_id=study.id)
