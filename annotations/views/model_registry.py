"""Staff's Models page: register a model by path and key, see whether a worker validated
and serves it, ask for a new validation. Raters never reach it (staff only)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from annotations import selectors, services, tasks
from annotations.forms import ModelRegisterForm
from annotations.models import ModelEntry
from annotations.queues import DEFAULT_MODEL_KEY


@staff_member_required
@require_http_methods(["GET", "POST"])
def model_list(request: HttpRequest) -> HttpResponse:
    form = ModelRegisterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            entry = services.model_register(
                key=form.cleaned_data["key"], path=form.cleaned_data["path"],
                display_name=form.cleaned_data["display_name"], created_by=request.user,
            )
            tasks.models_validate(entries=[entry])
        return redirect("model_list")
    serving = selectors.model_workers()
    context = {
        "form": form,
        "rows": [(entry, serving.get(entry.key, [])) for entry in ModelEntry.objects.all()],
        "default_workers": serving.get(DEFAULT_MODEL_KEY, []),
    }
    return render(request, "annotations/models.html", context,
                  status=400 if form.is_bound else 200)


@staff_member_required
@require_POST
def model_revalidate(request: HttpRequest, entry_id: int) -> HttpResponse:
    entry = get_object_or_404(ModelEntry, id=entry_id)
    with transaction.atomic():
        if services.model_revalidate(entry=entry):
            entry.refresh_from_db()
            tasks.models_validate(entries=[entry])
    return redirect("model_list")
