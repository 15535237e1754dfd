"""Staff pages: studies and generation progress (the results fragment is `reports`')."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling

from annotations import selectors, services, tasks
from annotations.models import Study
from annotations.views.staff_actions import study_action


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
        "guard_only_checks": selectors.guard_only_checks(study),
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


@study_action(then="study_detail")
def study_generate(study: Study) -> None:
    services.generations_create(study=study)
    tasks.generations_enqueue(study=study)
    tasks.executions_enqueue(study=study)


@study_action(then="study_detail")
def study_cancel(study: Study) -> None:
    services.generations_cancel(study=study)


@study_action(then="study_detail")
def study_resume(study: Study) -> None:
    services.generations_resume(study=study)
    tasks.generations_enqueue(study=study)
    tasks.executions_enqueue(study=study)
