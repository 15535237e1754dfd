"""Rater pages: entry (Prolific, invite), consent, the blind pairwise page, completion."""

from __future__ import annotations

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotations import selectors, services
from annotations.forms import ConsentForm, JudgmentForm
from annotations.highlight import shown_html
from annotations.models import Assignment, Enrolment, Invite, Study


def _get_study_for_rater(request: HttpRequest, study_id: int) -> Study:
    # Only studies the rater is enrolled in and that are open; anything else 404s.
    return get_object_or_404(Study, id=study_id, raters=request.user, status=Study.Status.OPEN)


def _enrolment(request: HttpRequest, study: Study) -> Enrolment:
    return services.enrolment_get(study=study, rater=request.user)


def _get_assignment_for_rater(request: HttpRequest, assignment_id: int) -> Assignment:
    return get_object_or_404(
        # With what the submit reads of it: a judgment already made, a gold answer.
        Assignment.objects.select_related("pair__study", "pair__gold", "judgment"),
        id=assignment_id,
        rater=request.user,
    )


def _log_in_rater(request: HttpRequest, user) -> None:
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_staff:
        return redirect("study_list")
    studies = selectors.studies_for_rater(request.user)
    rows = [(s, selectors.rater_progress(s, request.user)) for s in studies]
    return render(request, "annotations/home.html", {"rows": rows})


@require_GET
def prolific_entry(request: HttpRequest, study_id: int) -> HttpResponse:
    """/p/<study_id>/?PROLIFIC_PID=…&STUDY_ID=…&SESSION_ID=… logs the participant in."""
    study = get_object_or_404(Study, id=study_id, status=Study.Status.OPEN)
    try:
        user = services.prolific_rater_get(
            study=study,
            prolific_pid=request.GET.get("PROLIFIC_PID", ""),
            prolific_study_id=request.GET.get("STUDY_ID", ""),
            session_id=request.GET.get("SESSION_ID", ""),
        )
    except ValueError as error:
        return render(request, "annotations/entry_error.html", {"message": str(error)}, status=400)
    _log_in_rater(request, user)
    return redirect("rate", study_id=study.id)


@require_GET
def invite_entry(request: HttpRequest, token: str) -> HttpResponse:
    invite = get_object_or_404(Invite, token=token, study__status=Study.Status.OPEN)
    if invite.rater is not None and (invite.rater.is_staff or invite.rater.is_superuser):
        # A link that logs in must never open a staff account (e.g. one re-pointed in admin).
        raise Http404("no such invite")
    user = services.invite_redeem(invite=invite)
    _log_in_rater(request, user)
    return redirect("rate", study_id=invite.study_id)


@login_required
@require_http_methods(["GET", "POST"])
def consent(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _get_study_for_rater(request, study_id)
    enrolment = _enrolment(request, study)
    form = ConsentForm(
        request.POST if request.method == "POST" else None, questions=study.profile_questions
    )
    if request.method == "POST":
        if not form.is_valid():
            return render(
                request, "annotations/consent.html", {"study": study, "form": form}, status=400
            )
        services.enrolment_consent(enrolment=enrolment, profile=form.profile())
        return redirect("rate", study_id=study.id)
    return render(request, "annotations/consent.html", {"study": study, "form": form})


@login_required
@require_GET
def complete(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id, raters=request.user)
    context = _completion(study, _enrolment(request, study))
    return render(request, "annotations/complete.html", context)


def _completion(study: Study, enrolment: Enrolment) -> dict:
    """The end of a rater's session: the completion code is their proof of work on the
    crowd platform, so it is shown only once they have run out of pairs, never when
    blocked; the link only if it is a web address (never `javascript:`)."""
    blocked = enrolment.is_blocked
    finished = enrolment.completed_at is not None and not blocked
    url = study.completion_url
    return {
        "study": study,
        "blocked": blocked,
        "finished": finished,
        "completion_code": study.completion_code if finished else "",
        "completion_url": url if finished and url.lower().startswith(("https://", "http://"))
        else "",
    }


def _render_pair(
    request: HttpRequest,
    study: Study,
    enrolment: Enrolment,
    *,
    fragment: bool,
    form: JudgmentForm | None = None,
    criteria: list | None = None,
    message: str = "",
    warning: str = "",
    assignment: Assignment | None = None,
) -> HttpResponse:
    progress = None
    if not enrolment.is_blocked and assignment is None:
        assignment, progress = services.assignment_next_counted(study=study, rater=request.user)
    if assignment is None or enrolment.is_blocked:
        assignment = None
        services.enrolment_complete(enrolment=enrolment)
    context = {
        "study": study,
        "criteria": criteria if criteria is not None else list(study.criteria.all()),
        "form": form,
        "message": message,
        "warning": warning,
        "progress": progress or selectors.rater_progress(study, request.user),
        **_completion(study, enrolment),
    }
    if assignment is not None:
        shown = selectors.pair_shown(assignment.id)
        context["shown"] = shown
        left_html, right_html, diff = shown_html(shown.left, shown.right)
        context.update(left_html=left_html, right_html=right_html, diff_html=diff)
    template = "annotations/rate.html#pair" if fragment else "annotations/rate.html"
    return render(request, template, context)


@login_required
@require_GET
def rate(request: HttpRequest, study_id: int) -> HttpResponse:
    # One read for the study whatever its state, and with it the rater's enrolment once
    # there is one: paused says so, other non-open studies 404.
    enrolment = selectors.enrolments_in(study_id, request.user).select_related("study").first()
    study = enrolment.study if enrolment is not None else get_object_or_404(
        Study, id=study_id, raters=request.user
    )
    if study.status == Study.Status.PAUSED:
        return render(request, "annotations/paused.html", {"study": study})
    if not study.is_open():
        raise Http404("no such study")
    enrolment = enrolment or _enrolment(request, study)
    if study.consent_text and enrolment.consented_at is None:
        return redirect("consent", study_id=study.id)
    return _render_pair(request, study, enrolment, fragment=bool(request.htmx))


def _time_on_task_ms(request: HttpRequest) -> int | None:
    try:
        value = int(request.POST.get("time_on_task_ms", ""))
    except ValueError:
        return None
    return value if 0 <= value < 24 * 3600 * 1000 else None


@login_required
@require_POST
def judge(request: HttpRequest, assignment_id: int) -> HttpResponse:
    assignment = _get_assignment_for_rater(request, assignment_id)
    study = assignment.pair.study
    if not study.is_open():
        stopped = "This study is paused or closed; your choice was not recorded."
        if not request.htmx:
            return HttpResponseBadRequest(stopped)
        # htmx does not swap error responses: answer 200 so the rater sees why.
        context = {"study": study, "stopped": stopped,
                   "progress": selectors.rater_progress(study, request.user)}
        return render(request, "annotations/rate.html#pair", context)
    enrolment = services.enrolment_get(study=study, rater=request.user)
    if study.consent_text and enrolment.consented_at is None:
        return HttpResponseBadRequest("Please accept the consent form first.")
    criteria = list(study.criteria.all())
    form = JudgmentForm(request.POST, criteria=criteria)
    fragment = bool(request.htmx)
    if not form.is_valid():
        if "choice" in form.errors and not request.htmx:
            return HttpResponseBadRequest(form.errors["choice"][0])
        # Keep the same pair, with the errors beside the fields.
        return _render_pair(request, study, enrolment, fragment=fragment, form=form,
                            criteria=criteria, assignment=assignment)
    try:
        judgment, _ = services.judgment_submit(
            assignment=assignment,
            choice=form.cleaned_data["choice"],
            time_on_task_ms=_time_on_task_ms(request),
            rationale=form.cleaned_data["rationale"],
            ratings=form.ratings(),
            enrolment=enrolment,
            criteria=criteria,
        )
    except services.JudgmentRejected as rejected:
        assignment.refresh_from_db()
        keep = assignment if assignment.released_at is None else None
        return _render_pair(request, study, enrolment, fragment=fragment, criteria=criteria,
                            message=str(rejected), assignment=keep)
    warning = ""
    if judgment.gold_correct is False:
        enrolment.refresh_from_db()  # a failed attention check may just have blocked them
        warning = (
            "That pair was an attention check, and your answer did not match. "
            "Please read both responses carefully."
        )
    if not fragment:
        return redirect("rate", study_id=study.id)
    return _render_pair(request, study, enrolment, fragment=True, criteria=criteria,
                        warning=warning)
