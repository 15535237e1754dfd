"""Staff pages: studies and generation progress (the results fragment is `reports`')."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotations import selectors, services, tasks
from annotations.models import Condition, ConditionServer, Study
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
        "models": selectors.study_model_service(study),
        "guard_only_checks": selectors.guard_only_checks(study),
        **_servers_context(study),
    }
    return render(request, "annotations/study_detail.html", context)


def _servers_context(study: Study, *, refused: str = "") -> dict:
    """Each condition with its server (the one not stopped, if any), its status and, for
    one that exited by itself, the end of its log."""
    current = {
        s.condition_id: s
        for s in ConditionServer.objects.filter(condition__study=study, stopped_at__isnull=True)
    }
    rows = []
    for condition in study.conditions.all():
        server = current.get(condition.id)
        status = services.server_status(server) if server else "stopped"
        rows.append({
            "condition": condition, "server": server, "status": status,
            "log": services.server_log_tail(server) if status == "exited" else "",
        })  # fmt: skip
    return {"servers": rows, "servers_starting": any(r["status"] == "starting" for r in rows),
            "server_refused": refused}  # fmt: skip


@staff_member_required
@require_GET
def study_servers(request: HttpRequest, study_id: int) -> HttpResponse:
    """The servers fragment; polling stops once none is starting."""
    study = get_object_or_404(Study, id=study_id)
    context = {"study": study, **_servers_context(study)}
    response = render(request, "annotations/study_detail.html#servers", context)
    if not context["servers_starting"]:
        response = HttpResponseStopPolling(response.content)
    return response


@staff_member_required
@require_POST
def condition_server_start(request: HttpRequest, study_id: int, condition_id: int) -> HttpResponse:
    """Serve one of the study's conditions (a condition of another study is a 404)."""
    condition = get_object_or_404(Condition, id=condition_id, study_id=study_id)
    try:
        services.condition_server_start(condition=condition)
    except services.ServerRefused as refused:
        study = condition.study
        context = {"study": study, **_servers_context(study, refused=str(refused))}
        return render(request, "annotations/study_detail.html#servers", context, status=409)
    return redirect(reverse("study_detail", args=[study_id]) + "#servers")


@staff_member_required
@require_POST
def condition_server_stop(request: HttpRequest, study_id: int, server_id: int) -> HttpResponse:
    """Stop one of the study's servers (another study's is a 404)."""
    server = get_object_or_404(ConditionServer, id=server_id, condition__study_id=study_id)
    services.condition_server_stop(server=server)
    return redirect(reverse("study_detail", args=[study_id]) + "#servers")


@staff_member_required
@require_GET
def study_progress(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id)
    progress = selectors.study_progress(study)
    response = render(
        request,
        "annotations/study_detail.html#progress",
        {"study": study, "progress": progress,
         "models": selectors.study_model_service(study)},
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
