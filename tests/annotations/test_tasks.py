"""The generate task's body, run in this process on a real (tiny) model: what it records."""

import html

import pytest
from django.test import Client
from django.urls import reverse

from annotations import pipeline, tasks
from annotations.engine import loaded_model
from annotations.models import Generation
from inference.generate import prompt_ids
from tests.annotations.conftest import make_study

pytestmark = pytest.mark.django_db


def test_a_prompt_past_the_context_fails_its_row_with_the_numbers_once(
    tiny_model_configured, users
):
    study = make_study(
        n_items=2,
        conditions=[("dense", {"kind": "dense"}), ("static", {"kind": "static", "threshold": 0.1})],
    )
    study.max_new_tokens = 16
    study.save()
    short, long = study.items.order_by("id")
    long.prompt = " ".join(f"w{i % 40}" for i in range(250))
    long.save()
    pipeline.generations_create(study=study)
    prompt_tokens = prompt_ids(loaded_model().tokenizer, long.prompt).shape[1]

    results = {g.id: tasks.generate(g.id) for g in Generation.objects.filter(item__study=study)}

    rows = Generation.objects.filter(item__study=study)
    assert {g.item_id: g.status for g in rows} == {short.id: "done", long.id: "failed"}
    refused = rows.filter(item=long)
    expected = (
        f"Refused: the prompt is too long for the model: {prompt_tokens} prompt tokens + 16 new "
        f"tokens (max_new_tokens) = {prompt_tokens + 16} > 256, the model's context length"
    )
    assert {g.error for g in refused} == {expected}
    assert sorted(results.values()) == ["done", "done", "failed", "failed"]
    # A failed row is not retried: a redelivered task, and the reaper, leave it alone.
    assert {tasks.generate(g.id) for g in refused} == {"skipped"}
    assert tasks.generations_reap(queue_empty=True) == 0
    assert set(refused.values_list("status", "attempts")) == {("failed", 1)}

    client = Client()
    client.force_login(users[0])
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert f"{long} × dense: {html.escape(expected)}" in page
