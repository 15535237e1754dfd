"""The shape every one-button staff action shares: staff only, POST only, fetch the study
(404 if absent), act on it, redirect to a staff page."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from annotations.models import Study


def study_action(then: str) -> Callable[[Callable[[Study], None]], Callable[..., HttpResponse]]:
    """Turn `act(study)` into a view that runs it and redirects to the url named `then`."""

    def decorate(act: Callable[[Study], None]) -> Callable[..., HttpResponse]:
        @staff_member_required
        @require_POST
        @functools.wraps(act)
        def view(request: HttpRequest, study_id: int) -> HttpResponse:
            study = get_object_or_404(Study, id=study_id)
            act(study)
            return redirect(then, study_id=study.id)

        return view

    return decorate
