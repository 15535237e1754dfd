"""The condition builder on the new-study page: fields per family, add a condition or a
sweep, and the pair count of the design. htmx fragments; the study form posts the rows."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.admin.views.decorators import staff_member_required
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import reswap, retarget, trigger_client_event

from annotations import selectors
from annotations.conditions import (
    CALIBRATABLE,
    CALIBRATION_SETS,
    FAMILIES,
    SWEEPABLE,
    BuiltCondition,
    ModelChoice,
    PairCount,
    build_condition,
    build_sweep,
    family_fields,
    family_help,
    parse_lambda,
    parse_lambdas,
)
from annotations.forms import prompts_split
from annotations.queues import DEFAULT_MODEL_KEY

DEFAULT_FAMILY = "static"
_PREFIX = "p_"  # policy fields, apart from the study form's own names
# The study form's fields the pair count reads.
_COUNTED = ("conditions", "overlap", "pair_design", "datasets", "item_count", "prompts")


def _family(request_data) -> str:
    family = request_data.get("b_family", DEFAULT_FAMILY)
    return family if family in FAMILIES else DEFAULT_FAMILY


def _fields_context(family: str) -> dict:
    return {
        "family": family,
        "family_help": family_help(family),
        "fields": family_fields(family),
        "calibratable": family in CALIBRATABLE,
        "sweepable": family in SWEEPABLE,
        "calibration_sets": CALIBRATION_SETS.items(),
    }


def _rows(form: BaseForm) -> list[BuiltCondition]:
    """The builder's rows to show: what was posted (re-checked; a bad row is dropped, the
    form error says why), or the dense baseline on a fresh page."""
    if not form.is_bound:
        return [BuiltCondition(name="dense", policy={"kind": "dense"})]
    rows = []
    for text in form.data.getlist("built"):
        try:
            rows.append(BuiltCondition.from_json(text))
        except ValueError:
            continue
    return rows


def builder_context(form: BaseForm) -> dict:
    """The new-study page's context: the form and the builder."""
    rows = _rows(form)
    data = form.data if form.is_bound else QueryDict(mutable=True)
    if not form.is_bound:
        data.update({name: form[name].value() or "" for name in _COUNTED})
    return {
        "form": form,
        "families": [(kind, family_help(kind)) for kind in FAMILIES],
        "built_rows": rows,
        "models": selectors.models_offered(),
        "count": _pair_count(data, built=len(rows)),
        **_fields_context(DEFAULT_FAMILY),
    }


@staff_member_required
@require_GET
def condition_fields(request: HttpRequest) -> HttpResponse:
    return render(request, "annotations/_condition_fields.html", _fields_context(_family(
        request.GET)))


def _values(request: HttpRequest) -> dict[str, str]:
    values = {
        key.removeprefix(_PREFIX): value
        for key, value in request.POST.items()
        if key.startswith(_PREFIX)
    }
    values["target_sparsity_percent"] = request.POST.get("b_target", "")
    return values


def _model_choices(request: HttpRequest, lambdas: list[float | None]) -> list[ModelChoice]:
    """The builder's model fields, one choice per λ (a single None: no alignment vector),
    each checked against the registry (ValueError with the reason)."""
    model = request.POST.get("b_model", "") or DEFAULT_MODEL_KEY
    aligned = request.POST.get("b_aligned", "")
    choices = [ModelChoice(model=model, aligned=aligned if lam is not None else "",
                           alignment_lambda=lam) for lam in lambdas]
    problem = selectors.model_choice_problem(choices[0])
    if problem:
        raise ValueError(problem)
    return choices


def _lambda(request: HttpRequest) -> float | None:
    """The one λ of an alignment vector, None without an aligned model."""
    if not request.POST.get("b_aligned"):
        return None
    return parse_lambda(request.POST.get("b_lambda", ""))


def _build(
    request: HttpRequest, make: Callable[..., list[BuiltCondition]], *,
    lambdas: Callable[[], list[float | None]] = lambda: [None], rename: bool = True,
) -> HttpResponse:
    """Rows from the builder's fields for the list, each on the chosen model (once per λ of
    `lambdas`), or the builder's error message."""
    try:
        built = make(
            kind=_family(request.POST),
            values=_values(request),
            calibration_set=request.POST.get("b_set", "items"),
        )
        choices = _model_choices(request, lambdas())
        rows = [row.on_model(choice, rename=rename) for choice in choices for row in built]
    except ValueError as error:
        response = render(request, "annotations/_builder_error.html", {"message": str(error)})
        return reswap(retarget(response, "#builder-error"), "innerHTML")
    response = render(request, "annotations/_condition_rows.html", {"built_rows": rows})
    return trigger_client_event(response, "conditions-changed", after="settle")


@staff_member_required
@require_POST
def condition_add(request: HttpRequest) -> HttpResponse:
    """One condition from the builder's fields, as a row for the list (or why not)."""
    name = request.POST.get("b_name", "")
    return _build(request, lambda **fields: [build_condition(name=name, **fields)],
                  lambdas=lambda: [_lambda(request)], rename=not name.strip())


@staff_member_required
@require_POST
def condition_sweep(request: HttpRequest) -> HttpResponse:
    """One condition per target sparsity of the chosen family, as rows for the list."""
    sparsities = request.POST.get("b_sparsities", "")
    return _build(request, functools.partial(build_sweep, sparsities=sparsities),
                  lambdas=lambda: [_lambda(request)])


@staff_member_required
@require_POST
def condition_lambda_sweep(request: HttpRequest) -> HttpResponse:
    """One condition per λ of an alignment vector between the chosen base and aligned
    models, all under the policy of the builder's fields."""
    name = request.POST.get("b_name", "")

    def lambdas() -> list[float | None]:
        if not request.POST.get("b_aligned"):
            raise ValueError("a λ sweep needs an aligned model (“Alignment vector towards”)")
        return list(parse_lambdas(request.POST.get("b_lambdas", "")))

    return _build(request, lambda **fields: [build_condition(name=name, **fields)],
                  lambdas=lambdas)


def _count_items(data) -> int:
    try:
        datasets = [d for d in data.getlist("datasets") if d]
        drawn = int(data.get("item_count") or 0) * len(datasets)
    except ValueError:
        drawn = 0
    return max(drawn, 0) + len(prompts_split(data.get("prompts", "")))


@staff_member_required
@require_POST
def condition_count(request: HttpRequest) -> HttpResponse:
    """How many pairs and judgments the design on the form asks for (at most: a data set
    may hold fewer problems than asked for)."""
    return render(request, "annotations/_pair_count.html", {"count": _pair_count(request.POST)})


def _pair_count(data, *, built: int | None = None) -> PairCount:
    lines = [line for line in data.get("conditions", "").splitlines() if line.strip()]
    try:
        overlap = max(int(data.get("overlap") or 1), 1)
    except ValueError:
        overlap = 1
    return PairCount(
        conditions=(len(data.getlist("built")) if built is None else built) + len(lines),
        items=_count_items(data),
        design=data.get("pair_design") or "all_pairs",
        overlap=overlap,
    )
