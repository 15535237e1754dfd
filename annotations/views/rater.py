"""Rater pages: entry (Prolific, invite), consent, the blind pairwise page, waiting,
completion."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from annotations import selectors, services, throttle
from annotations.forms import ConsentForm, JudgmentForm
from annotations.highlight import shown_html
from annotations.models import Assignment, Criterion, Enrolment, Invite, Study


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


# Study links of a draft answer "not started yet" (researchers share them before launch);
# those of a closed study 404 as before.
_ENTERABLE = [Study.Status.DRAFT, Study.Status.OPEN]


def _not_started(request: HttpRequest, study: Study) -> HttpResponse:
    """A draft's link: nothing is created and no one is logged in; staff get a preview."""
    return render(request, "annotations/not_started.html", {"study": study})


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
    study = get_object_or_404(Study, id=study_id, status__in=_ENTERABLE)
    if study.status == Study.Status.DRAFT:
        return _not_started(request, study)
    ip = throttle.client_ip(request)
    try:
        user = services.prolific_rater_get(
            study=study,
            prolific_pid=request.GET.get("PROLIFIC_PID", ""),
            prolific_study_id=request.GET.get("STUDY_ID", ""),
            session_id=request.GET.get("SESSION_ID", ""),
            may_create=lambda: throttle.entry_account_allowed(study_id=study.id, ip=ip),
        )
    except services.EntryThrottled as error:
        return render(request, "annotations/entry_error.html", {"message": str(error)},
                      status=429)
    except ValueError as error:
        return render(request, "annotations/entry_error.html", {"message": str(error)}, status=400)
    _log_in_rater(request, user)
    return redirect("rate", study_id=study.id)


@require_GET
def invite_entry(request: HttpRequest, token: str) -> HttpResponse:
    invite = get_object_or_404(
        Invite.objects.select_related("study"), token=token, study__status__in=_ENTERABLE
    )
    if invite.rater is not None and (invite.rater.is_staff or invite.rater.is_superuser):
        # A link that logs in must never open a staff account (e.g. one re-pointed in admin).
        raise Http404("no such invite")
    if invite.study.status == Study.Status.DRAFT:
        return _not_started(request, invite.study)
    user = services.invite_redeem(invite=invite)
    _log_in_rater(request, user)
    return redirect("rate", study_id=invite.study_id)


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
def consent(request: HttpRequest, study_id: int) -> HttpResponse:
    study = _get_study_for_rater(request, study_id)
    enrolment = _enrolment(request, study)
    if enrolment.consented_at is not None:
        # Back from the rating page lands here: consent is given once, so on to the pairs.
        return redirect("rate", study_id=study.id)
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
@never_cache
def complete(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id, raters=request.user)
    context = _completion(study, _enrolment(request, study))
    return render(request, "annotations/complete.html", context)


def _completion(study: Study, enrolment: Enrolment) -> dict:
    """The end of a rater's session: the completion code is their proof of work on the
    crowd platform, so it is shown only once they have been marked complete (out of
    pairs, with the study's minimum judged), never when blocked; the link only if it is a
    web address (never `javascript:`)."""
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


@dataclass(frozen=True)
class CriterionShown:
    """A Likert criterion as the form shows it: the values typed so far (kept when a
    submit is refused) and its keys (q–t left, y–p right, up to five points)."""

    criterion: Criterion
    left: str
    right: str

    def sides(self) -> list[tuple[str, str, str, list[tuple[int, str]]]]:
        """(field suffix, label, value typed, (value, key) per point) of each response."""
        return [("left", "Response 1", self.left, self._keys("qwert")),
                ("right", "Response 2", self.right, self._keys("yuiop"))]

    def _keys(self, letters: str) -> list[tuple[int, str]]:
        values = self.criterion.scale_range()
        keys = letters if self.criterion.scale_points <= len(letters) else ""
        return [(v, keys[v - 1] if keys else "") for v in values]


def criteria_shown(criteria: list[Criterion], typed: dict[str, str]) -> list[CriterionShown]:
    return [
        CriterionShown(c, left=typed.get(f"c{c.id}_left", ""),
                       right=typed.get(f"c{c.id}_right", ""))
        for c in criteria
    ]


_WAITING_SINCE = "waiting_since:{}"
# How often the "no pair right now" page asks again.
WAIT_POLL_S = 5


def _waited(request: HttpRequest, study: Study) -> str:
    """How long the rater has been waiting for a pair in this study, as words (the
    start is kept in the session and forgotten when a pair is shown)."""
    key = _WAITING_SINCE.format(study.id)
    now = timezone.now().timestamp()
    since = request.session.setdefault(key, now)
    minutes, seconds = divmod(int(now - since), 60)
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


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
    typed: dict[str, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The rater's current pair (a new one unless `assignment` is given), or, with none
    free, the waiting page, the end of their session, or its early end.

    `typed`: what the rater had entered on a refused submit, put back on the page."""
    progress = None
    if not enrolment.is_blocked and assignment is None:
        assignment, progress = services.assignment_next_counted(study=study, rater=request.user)
    if enrolment.is_blocked:
        assignment = None
    criteria = criteria if criteria is not None else list(study.criteria.all())
    typed = typed or {}
    context = {
        "study": study,
        "criteria": criteria_shown(criteria, typed),
        "rationale": typed.get("rationale", ""),
        "form": form,
        "message": message,
        "warning": warning,
        "progress": progress or selectors.rater_progress(study, request.user),
        "poll_s": WAIT_POLL_S,
    }
    if assignment is not None:
        request.session.pop(_WAITING_SINCE.format(study.id), None)
        shown = selectors.pair_shown(assignment.id)
        left_html, right_html, diff = shown_html(shown.left, shown.right)
        context.update(shown=shown, left_html=left_html, right_html=right_html, diff_html=diff,
                       judge_url=reverse("judge", args=[assignment.id]),
                       draft_key=f"draft:{assignment.id}")
    elif not enrolment.is_blocked:
        out = services.enrolment_out_of_pairs(study=study, enrolment=enrolment,
                                              rater=request.user)
        context["out_of_pairs"] = out.value
        if out is services.OutOfPairs.WAITING:
            context["waited"] = _waited(request, study)
    context.update(_completion(study, enrolment))
    template = "annotations/rate.html#pair" if fragment else "annotations/rate.html"
    return render(request, template, context, status=status)


@login_required
@require_GET
@never_cache
def rate(request: HttpRequest, study_id: int) -> HttpResponse:
    # One read for the study whatever its state, and with it the rater's enrolment once
    # there is one: paused says so, a draft says it has not started, closed 404s.
    enrolment = selectors.enrolments_in(study_id, request.user).select_related("study").first()
    study = enrolment.study if enrolment is not None else get_object_or_404(
        Study, id=study_id, raters=request.user
    )
    refusal = services.judging_refusal(study=study, enrolment=enrolment)
    if refusal is services.Refusal.NOT_STARTED:
        return _not_started(request, study)
    if refusal is services.Refusal.STOPPED:
        if study.status != Study.Status.PAUSED:
            raise Http404("no such study")
        return render(request, "annotations/paused.html", {"study": study})
    if refusal is services.Refusal.NO_CONSENT:
        return redirect("consent", study_id=study.id)
    # Blocked raters see the end of their session (`_render_pair`).
    enrolment = enrolment or _enrolment(request, study)
    # After a resubmit without htmx (judge redirects here): say, once, why nothing changed.
    message = " ".join(m.message for m in messages.get_messages(request))
    return _render_pair(request, study, enrolment, fragment=bool(request.htmx), message=message)


def _time_on_task_ms(request: HttpRequest) -> int | None:
    try:
        value = int(request.POST.get("time_on_task_ms", ""))
    except ValueError:
        return None
    return value if 0 <= value < 24 * 3600 * 1000 else None


def _typed(request: HttpRequest) -> dict[str, str]:
    """What the rater entered (rationale, Likert values), to put back on a refused submit."""
    return {name: value for name, value in request.POST.items()
            if name == "rationale" or (name.startswith("c") and name.endswith(("_left",
                                                                               "_right")))}


def _already_judged(request: HttpRequest, study: Study, enrolment: Enrolment, *,
                    criteria: list[Criterion]) -> HttpResponse:
    """A resubmit (back button, a second tab, a replay): say so and change nothing."""
    judged = services.Refusal.JUDGED.value
    if not request.htmx:
        messages.info(request, judged)
        return redirect("rate", study_id=study.id)
    return _render_pair(request, study, enrolment, fragment=True, criteria=criteria,
                        message=judged)


@login_required
@require_http_methods(["GET", "POST"])
@never_cache
def judge(request: HttpRequest, assignment_id: int) -> HttpResponse:
    assignment = _get_assignment_for_rater(request, assignment_id)
    study = assignment.pair.study
    if request.method == "GET":
        # A bookmarked or reloaded submit address: back to the rating page, not a blank 405.
        return redirect("rate", study_id=study.id)
    enrolment = Enrolment.objects.filter(study=study, rater=request.user).first()
    refusal = services.judging_refusal(study=study, enrolment=enrolment, assignment=assignment)
    if refusal in (services.Refusal.NOT_STARTED, services.Refusal.STOPPED):
        if not request.htmx:
            return HttpResponseBadRequest(refusal.value)
        # htmx does not swap error responses: answer 200 so the rater sees why.
        context = {"study": study, "stopped": refusal.value,
                   "progress": selectors.rater_progress(study, request.user)}
        return render(request, "annotations/rate.html#pair", context)
    if refusal is services.Refusal.NO_CONSENT:
        return HttpResponseBadRequest(refusal.value)
    enrolment = enrolment or services.enrolment_get(study=study, rater=request.user)
    criteria = list(study.criteria.all())
    fragment = bool(request.htmx)
    if refusal is services.Refusal.BLOCKED:
        return _render_pair(request, study, enrolment, fragment=fragment, criteria=criteria,
                            message=refusal.value)
    if refusal is services.Refusal.JUDGED:
        return _already_judged(request, study, enrolment, criteria=criteria)
    form = JudgmentForm(request.POST, criteria=criteria)
    if not form.is_valid():
        if "choice" in form.errors and not request.htmx:
            return HttpResponseBadRequest(form.errors["choice"][0])
        # Keep the same pair, with the errors beside the fields and what was typed.
        return _render_pair(request, study, enrolment, fragment=fragment, form=form,
                            criteria=criteria, assignment=assignment, typed=_typed(request))
    try:
        judgment, created = services.judgment_submit(
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
        same_pair = assignment.released_at is None
        typed = _typed(request)
        message = str(rejected)
        if not same_pair and typed.get("rationale", "").strip():
            # The pair went to someone else: what they wrote is shown, not lost.
            message += f" What you wrote about that pair: “{typed['rationale'].strip()}”"
        return _render_pair(request, study, enrolment, fragment=fragment, criteria=criteria,
                            message=message, assignment=assignment if same_pair else None,
                            typed=typed if same_pair else None)
    if not created:  # a parallel submit of the same pair got there first
        return _already_judged(request, study, enrolment, criteria=criteria)
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
