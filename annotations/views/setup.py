"""Staff study setup: create a study, launch / pause / close it, recruit raters, export."""

from __future__ import annotations

import functools
import json

import pandas as pd
from django.contrib.admin.views.decorators import staff_member_required
from django.db import transaction
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from analysis.judge_agreement import VERDICT_COLUMNS, judge_effect
from analysis.power import StudyDesign, power_percent, power_statement, sample_size
from annotations import selectors, services, tasks
from annotations.conditions import PairCount
from annotations.forms import (
    GoldSettingsForm,
    JudgePilotForm,
    JudgmentForm,
    RaterTitleForm,
    StudySetupForm,
)
from annotations.highlight import shown_html
from annotations.models import ConditionServer, Pair, Study
from annotations.views.conditions import builder_context
from annotations.views.rater import criteria_shown
from annotations.views.staff_actions import study_action

# Prompts shown on the setup page, so staff read what the model will be asked before launch.
_SHOWN_PROMPTS = 5
_ITEM_FIELDS = ["datasets", "task_contains", "prompt_contains", "item_count", "seed", "prompts"]


@staff_member_required
@require_http_methods(["GET", "POST"])
def study_new(request: HttpRequest) -> HttpResponse:
    form = StudySetupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        with transaction.atomic():
            study = services.study_create(
                fields={name: data[name] for name in StudySetupForm.Meta.fields},
                conditions=[(c.name, c.policy) for c in data["conditions"]],
                models={c.name: c.model for c in data["conditions"]},
                criteria=data["criteria"],
                **{name: data[name] for name in _ITEM_FIELDS},
            )
            services.calibrations_create(study=study, built=data["conditions"])
            # Generation starts by itself: the ready conditions now, the calibrated ones
            # when their calibration is done (`tasks.calibrate`).
            tasks.calibrations_enqueue(study=study)
            services.generations_create(study=study)
            tasks.generations_enqueue(study=study)
        return redirect("study_setup", study_id=study.id)
    return render(request, "annotations/setup_new.html", builder_context(form))


def _setup_page(
    request: HttpRequest,
    study: Study,
    *,
    reasons=(),
    title_form: RaterTitleForm | None = None,
    gold_form: GoldSettingsForm | None = None,
    gold_message: str = "",
    pilot_form: JudgePilotForm | None = None,
    status: int = 200,
):
    conditions = list(study.conditions.select_related("calibration", "model", "aligned_model"))
    n_items = study.items.count()
    gold_pairs = selectors.gold_pairs(study)
    context = {
        **_gold_context(request, study, gold_pairs=gold_pairs),
        "gold_form": gold_form or GoldSettingsForm(instance=study),
        "gold_message": gold_message,
        "study": study,
        "reasons": reasons,
        "title_form": title_form or RaterTitleForm(instance=study),
        "conditions": conditions,
        # Their achieved sparsity comes with `reports`' fragment (study_condition_sparsity),
        # computed by the report's own function.
        "condition_entries": [{"name": c.name, "summary": c.summary()} for c in conditions],
        "criteria": study.criteria.all(),
        "n_items": n_items,
        "sample_items": study.items.order_by("id")[:_SHOWN_PROMPTS],
        "n_pairs": study.pairs.filter(gold_copy=False).count(),
        "invites": study.invites.select_related("rater").order_by("-created_at")[:50],
        "prolific_url": request.build_absolute_uri(reverse("prolific_entry", args=[study.id]))
        + "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}",
        "quality": selectors.rater_quality(study),
        "calibration": selectors.calibration_state(study),
        "pair_count": PairCount(
            conditions=len(conditions), items=n_items, design=study.pair_design,
            overlap=study.overlap,
        ),
        "power": _power_line(study, n_conditions=len(conditions), n_items=n_items),
        "pilot_form": pilot_form or JudgePilotForm(initial=_served(study)),
        **_pilot_context(study, conditions=[c.name for c in conditions]),
    }
    return render(request, "annotations/setup_study.html", context, status=status)


def _gold_context(request: HttpRequest, study: Study, *, gold_pairs: list[Pair]) -> dict:
    """The setup page's attention checks: those made, what they cost, and the ordinary pair
    shown (`?gold=N`) to be made one, both outputs highlighted as raters see them."""
    candidate = selectors.gold_candidate(study, _preview_index(request.GET.get("gold")))
    context = {"gold_pairs": gold_pairs, "gold_candidate": candidate,
               "gold_cost": gold_cost(study, n_gold=len(gold_pairs))}
    if candidate is not None:
        pair = candidate.pair
        a_html, b_html, _ = shown_html(pair.generation_a.text, pair.generation_b.text)
        context.update(gold_a_html=a_html, gold_b_html=b_html)
    return context


def gold_cost(study: Study, *, n_gold: int) -> str:
    """What the study's attention checks cost raters, in words. A rater is given an unseen
    gold pair with probability r before each new pair, so about r / (1 − r) checks per
    ordinary judgment (a geometric count), each gold pair at most once per rater."""
    rate = study.gold_rate
    if not n_gold:
        return ("No gold pairs yet. Each one is an extra copy of a pair, so no condition "
                "comparison loses a pair.")
    extra = (f"each rater is given all {n_gold} of them" if rate >= 1 else
             f"about {rate / (1 - rate):.2f} checks per ordinary judgment "
             f"({100 * rate / (1 - rate):.0f} % more rating time), at most {n_gold} per rater")
    if rate <= 0:
        extra = "none: the gold rate is 0, so no rater is given them (set a rate below)"
    cap = study.items_per_rater
    if cap and 0 < rate < 1:
        extra += f"; with {cap} ordinary pairs per rater, about "
        extra += f"{min(n_gold, round(cap * rate / (1 - rate)))} checks each"
    return (f"{n_gold} gold pair{'' if n_gold == 1 else 's'}, each an extra copy of a pair: "
            f"no condition comparison loses a pair. Their cost in rater time: {extra}. Their "
            "answers feed only the gold accuracy and the blocking rule, never a comparison.")


def _power_line(study: Study, *, n_conditions: int, n_items: int) -> str | None:
    """What the design can detect: a 60/40 preference of the first condition over each
    other one, independent verdicts, no ties (`analysis.power`); None with nothing to plan."""
    if n_conditions < 2 or n_items < 1:
        return None
    return power_statement(_design(study, n_conditions), n_items)


def _design(study: Study, n_conditions: int, **effect) -> StudyDesign:
    """The study's design for the power planner (`analysis.power`), with `effect`'s
    ``win_rate`` / ``tie_rate`` where given (else the planner's 60/40, no ties)."""
    return StudyDesign(
        conditions=n_conditions,
        raters_per_pair=study.overlap,
        design="vs-first" if study.pair_design == Study.PairDesign.VS_FIRST else "all-pairs",
        items_per_rater=study.items_per_rater,
        **effect,
    )


def _served(study: Study) -> dict | None:
    """A server of one of the study's conditions, as the pilot form's first endpoint."""
    server = ConditionServer.objects.filter(
        condition__study=study, stopped_at__isnull=True
    ).first()
    return {"url": server.url, "model": server.model_name} if server else None


def _pilot_context(study: Study, *, conditions: list[str]) -> dict:
    pilots = judge_pilot_rows(study, conditions=conditions)
    return {"pilots": pilots, "pilots_waiting": any(not r["pilot"].finished for r in pilots)}


def judge_pilot_rows(study: Study, *, conditions: list[str]) -> list[dict]:
    """Each judge asked about the study (`selectors.judge_pilots`) with what its verdicts
    plan for the humans (`pilot_plan`), once it has any."""
    pilots = selectors.judge_pilots(study)
    if not pilots:
        return []
    verdicts = pd.DataFrame(selectors.judge_verdict_rows(study), columns=[*VERDICT_COLUMNS,
                                                                           "fingerprint"])
    return [
        {
            "pilot": pilot,
            "plan": pilot_plan(
                study, verdicts[verdicts["judge"] == f"{pilot.model} at {pilot.url}"],
                conditions=conditions,
            ),
        }
        for pilot in pilots
    ]


def pilot_plan(study: Study, verdicts: pd.DataFrame, *, conditions: list[str]) -> dict:
    """The judge's effect (`analysis.judge_agreement.judge_effect`: the baseline's share of
    its decisive verdicts in the comparison nearest to no preference, and its tie share,
    both to the percent) fed to the power planner with the study's design: ``effect``,
    ``needed`` (`sample_size`'s judgments, items, power) or ``note`` why there is none."""
    effect = judge_effect(verdicts, conditions) if len(conditions) >= 2 else None
    if effect is None:
        return {"effect": None, "needed": None,
                "note": "no verdict of the judge compares the baseline yet"}  # fmt: skip
    win_rate, tie_rate = round(effect["win_rate"], 2), round(effect["tie_rate"], 2)
    if win_rate <= 0.5:
        return {"effect": effect, "needed": None,
                "note": "the judge sees no difference between the baseline and "
                        f"{effect['hardest']}: no number of judgments plans for none"}  # fmt: skip
    # A judge that always prefers one side plans as 99/1: the planner's rates are below 1.
    win_rate, tie_rate = min(win_rate, 0.99), min(tie_rate, 0.95)
    design = _design(study, len(conditions), win_rate=win_rate, tie_rate=tie_rate)
    return {"effect": {**effect, "planned_win_rate": win_rate, "planned_tie_rate": tie_rate},
            "needed": _needed(design), "note": None}  # fmt: skip


@functools.lru_cache(maxsize=256)  # seeded, so a design's plan never changes
def _needed(design: StudyDesign) -> dict:
    plan = sample_size(design, 0.8, simulations=400)
    return {**plan, "power_text": power_percent(plan["power"])}


@staff_member_required
@require_POST
def study_judge_pilot(request: HttpRequest, study_id: int) -> HttpResponse:
    """Have the judge at the form's endpoint judge every ordinary pair in both orders (on
    the judge queue); the setup page then shows its progress and what it plans."""
    study = get_object_or_404(Study, id=study_id)
    form = JudgePilotForm(request.POST)
    if not form.is_valid():
        return _setup_page(request, study, pilot_form=form, status=400)
    tasks.judge_verdicts_enqueue(
        study=study, url=form.cleaned_data["url"], model=form.cleaned_data["model"]
    )
    return redirect(reverse("study_setup", args=[study.id]) + "#judge-pilot")


@staff_member_required
@require_GET
def study_judge_pilot_progress(request: HttpRequest, study_id: int) -> HttpResponse:
    """The pilot's fragment; polling stops once every judge's verdicts are in."""
    study = get_object_or_404(Study, id=study_id)
    conditions = list(study.conditions.values_list("name", flat=True))
    context = _pilot_context(study, conditions=conditions)
    response = render(
        request, "annotations/setup_study.html#judge_pilot", {"study": study, **context}
    )
    if not context["pilots_waiting"]:
        response = HttpResponseStopPolling(response.content)
    return response


@staff_member_required
@require_GET
def study_calibration(request: HttpRequest, study_id: int) -> HttpResponse:
    """The calibration progress fragment; polling stops once every calibration finished."""
    study = get_object_or_404(Study, id=study_id)
    state = selectors.calibration_state(study)
    response = render(
        request, "annotations/setup_study.html#calibration", {"study": study, "calibration": state}
    )
    if state.finished:
        response = HttpResponseStopPolling(response.content)
    return response


@study_action(then="study_setup")
def study_calibration_retry(study: Study) -> None:
    services.calibrations_retry(study=study)
    tasks.calibrations_enqueue(study=study)


@staff_member_required
@require_GET
def study_setup(request: HttpRequest, study_id: int) -> HttpResponse:
    return _setup_page(request, get_object_or_404(Study, id=study_id))


@staff_member_required
@require_POST
def study_rater_title(request: HttpRequest, study_id: int) -> HttpResponse:
    """Change the title raters see, in any state (it is not part of the design)."""
    study = get_object_or_404(Study, id=study_id)
    form = RaterTitleForm(request.POST, instance=study)
    if not form.is_valid():
        return _setup_page(request, study, title_form=form, status=400)
    # Only this column: a whole-row save could undo a launch or pause made meanwhile.
    form.save(commit=False).save(update_fields=["rater_title"])
    return redirect("study_setup", study_id=study.id)


@staff_member_required
@require_POST
def study_launch(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id)
    reasons = services.study_launch(study=study)
    if reasons:
        return _setup_page(request, study, reasons=reasons, status=409)
    return redirect("study_setup", study_id=study.id)


@staff_member_required
@require_http_methods(["GET", "POST"])
@never_cache
def study_preview(request: HttpRequest, study_id: int) -> HttpResponse:
    """The rater flow on the study's real pairs, for staff, in any state; nothing is
    stored (no assignment, no judgment, no enrolment). A valid answer moves on to the
    next pair; an invalid one shows the form errors as a rater would see them."""
    study = get_object_or_404(Study, id=study_id)
    index = _preview_index(request.GET.get("n"))
    criteria = list(study.criteria.all())
    form = None
    if request.method == "POST":
        form = JudgmentForm(request.POST, criteria=criteria)
        if form.is_valid():
            return redirect(f"{reverse('study_preview', args=[study.id])}?n={index + 1}")
    shown, total = selectors.pair_previewed(study, index)
    context = {
        "study": study,
        "preview": True,
        "criteria": criteria_shown(criteria, request.POST if form else {}),
        "rationale": request.POST.get("rationale", "") if form else "",
        "form": form,
        "progress": selectors.RaterProgress(judged=index % total if total else 0,
                                            remaining=total - index % total if total else 0),
        "judge_url": f"{reverse('study_preview', args=[study.id])}?n={index}",
    }
    if shown is not None:
        left_html, right_html, diff = shown_html(shown.left, shown.right)
        context.update(shown=shown, left_html=left_html, right_html=right_html, diff_html=diff)
    template = "annotations/rate.html#pair" if request.htmx else "annotations/rate.html"
    return render(request, template, context)


def _preview_index(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0


def _gold_redirect(study: Study, index: int) -> HttpResponse:
    return redirect(f"{reverse('study_setup', args=[study.id])}?gold={index}#gold")


@staff_member_required
@require_POST
def study_gold(request: HttpRequest, study_id: int, pair_id: int) -> HttpResponse:
    """The attention check copying an ordinary pair: `winner` "a" or "b" (the better output,
    which staff chose seeing both) makes or changes it, an empty one removes it."""
    study = get_object_or_404(Study, id=study_id)
    pair = get_object_or_404(Pair, id=pair_id, study=study, gold_copy=False)
    winner = request.POST.get("winner", "")
    if winner not in ("a", "b", ""):
        return HttpResponseBadRequest("Choose which output is better: a or b.")
    try:
        services.gold_pair_set(pair=pair, winner=winner or None)
    except services.GoldPairInUse as error:
        return _setup_page(request, study, gold_message=str(error), status=409)
    # The pair just made gold leaves the candidates: the same number shows the next one.
    return _gold_redirect(study, _preview_index(request.POST.get("index")))


@staff_member_required
@require_POST
def study_gold_settings(request: HttpRequest, study_id: int) -> HttpResponse:
    study = get_object_or_404(Study, id=study_id)
    form = GoldSettingsForm(request.POST, instance=study)
    if not form.is_valid():
        return _setup_page(request, study, gold_form=form, status=400)
    # Only these columns: a whole-row save could undo a launch or pause made meanwhile.
    form.save(commit=False).save(update_fields=["gold_rate", "gold_block_after"])
    return _gold_redirect(study, 0)


@study_action(then="study_setup")
def study_pause(study: Study) -> None:
    services.study_status_set(study=study, status=Study.Status.PAUSED)


@study_action(then="study_setup")
def study_close(study: Study) -> None:
    services.study_status_set(study=study, status=Study.Status.CLOSED)


@study_action(then="study_setup")
def invite_new(study: Study) -> None:
    services.invite_create(study=study)


# JSON leaves these unescaped, yet str.splitlines() and some JSONL readers split on them.
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def _jsonl_line(row: dict) -> str:
    """One JSON object on exactly one line, whatever the model wrote."""
    return json.dumps(row, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


@staff_member_required
@require_GET
def export_preferences(request: HttpRequest, study_id: int) -> StreamingHttpResponse:
    """Judgments as DPO preference pairs, one JSON object per line."""
    study = get_object_or_404(Study, id=study_id)
    rows = selectors.preference_pairs(study)
    lines = (_jsonl_line(row) for row in rows)
    response = StreamingHttpResponse(lines, content_type="application/x-ndjson")
    response["Content-Disposition"] = f'attachment; filename="study-{study.id}-preferences.jsonl"'
    return response
