"""The task bodies, run in this process: generate on a real (tiny) model, execute on the real
sandbox; what they record, and what beat's sweep sends again."""

import html
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import selectors, services, tasks
from annotations.model_cache import loaded_model
from annotations.models import ExecutionJob, Generation, Problem
from annotations.selectors import study_progress
from inference.generate import GenerationResult, prompt_ids
from tests.annotations.conftest import make_study
from tests.support.worker import purge_queues

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
    services.generations_create(study=study)
    prompt_tokens = prompt_ids(loaded_model().tokenizer, long.prompt).shape[1]

    results = {g.id: tasks.generate(g.id) for g in Generation.objects.filter(item__study=study)}

    rows = Generation.objects.filter(item__study=study)
    assert {g.item_id: g.status for g in rows} == {short.id: "done", long.id: "failed"}
    for done in rows.filter(item=short):  # where and how it ran, and its memory baseline
        facts = done.provenance
        assert facts["host"] and facts["cpu_model"] and facts["threads"] >= 1, facts
        assert facts["torch_version"] and facts["weight_format"].startswith("torch.float32")
        assert facts["gpu_name"] == "" and facts["kernel_path"].startswith(
            ("lean decoder", "transformers")), facts
        assert 0 < done.rss_start_bytes and done.peak_rss_bytes > 0
    # The sparse output ran after dense's: its divergence from dense is measured at once.
    static = rows.get(item=short, condition__name="static").telemetry
    assert static["kl_from_dense"] >= 0 and 0 <= static["top1_agreement_with_dense"] <= 1
    assert static["divergence_tokens"] == rows.get(item=short, condition__name="dense").new_tokens
    assert "kl_from_dense" not in rows.get(item=short, condition__name="dense").telemetry
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


def _scorable_study(name="Checked"):
    """A one-item, two-condition study on a tiny HumanEval-style problem, its outputs stored
    as the worker stores them (so each has a waiting Pass@1 check)."""
    problem = Problem.objects.create(
        dataset="humaneval", task_id="Tiny/0", prompt="def one():\n    \"\"\"One.\"\"\"\n",
        entry_point="one",
        tests="def check(candidate):\n    assert candidate() == 1\n",
    )
    study = make_study(n_items=1, name=name, conditions=[
        ("dense", {"kind": "dense"}), ("static", {"kind": "static", "threshold": 0.1})])
    study.items.update(problem=problem)
    services.generations_create(study=study)
    texts = {"dense": "```python\ndef one():\n    return 1\n```", "static": "    return 2\n"}
    for g in Generation.objects.filter(item__study=study).select_related("item", "condition"):
        services.generation_claim(generation_id=g.id)
        result = GenerationResult(
            text=texts[g.condition.name], prompt_tokens=3, new_tokens=5, latency_s=0.1,
            tokens_per_s=50.0, peak_rss_bytes=1, active_fraction=1.0,
            active_fraction_per_layer=[1.0], finish_reason="stop",
        )
        assert services.generation_complete(generation=g, result=result, model_fingerprint="t")
    return study


def test_a_stored_output_gets_one_check_which_runs_once(django_capture_on_commit_callbacks):
    study = _scorable_study()
    jobs = ExecutionJob.objects.filter(generation__item__study=study)
    assert set(jobs.values_list("status", "attempts")) == {("pending", 0)}
    with django_capture_on_commit_callbacks() as sent:
        assert tasks.executions_enqueue(study=study) == 2
    assert len(sent) == 2
    verdicts = {g.condition.name: tasks.execute(g.id)
                for g in Generation.objects.filter(item__study=study)}
    assert verdicts == {"dense": "passed", "static": "failed"}
    assert set(jobs.values_list("status", "attempts", "lease_until")) == {("done", 1, None)}
    assert {tasks.execute(g.generation_id) for g in jobs} == {"skipped"}, "checked once"
    assert tasks.executions_enqueue(study=study) == 0
    assert tasks.executions_reap(queue_empty=True) == 0
    assert study_progress(study).finished


def test_the_sweep_resends_a_lost_check_and_a_dead_workers_check(
    django_capture_on_commit_callbacks,
):
    study = _scorable_study()
    jobs = ExecutionJob.objects.filter(generation__item__study=study)
    with django_capture_on_commit_callbacks() as sent:
        assert tasks.executions_reap(queue_empty=False) == 0, "their messages may be queued"
        assert tasks.executions_reap(queue_empty=True) == 2, "nothing queued: both lost"
    assert len(sent) == 2
    held = jobs.first()
    assert services.execution_claim(generation_id=held.generation_id) is not None
    assert tasks.executions_reap(queue_empty=False) == 0, "a live worker holds it"
    jobs.filter(id=held.id).update(lease_until=timezone.now() - timedelta(seconds=1))
    with django_capture_on_commit_callbacks() as sent:
        assert tasks.executions_reap(queue_empty=False) == 1, "its worker died"
    assert len(sent) == 1


def test_a_check_our_code_cannot_run_is_failed_with_its_reason_not_retried(
    monkeypatch, users
):
    study = _scorable_study()
    progress = study_progress(study)
    assert (progress.checks_pending, progress.finished) == (2, False)

    def broken(task, code):
        raise RuntimeError("the sandbox has no interpreter")

    monkeypatch.setattr(tasks, "check_candidate", broken)
    assert {tasks.execute(g.id) for g in Generation.objects.filter(item__study=study)} == {
        "failed"}
    jobs = ExecutionJob.objects.filter(generation__item__study=study)
    assert set(jobs.values_list("status", "error")) == {
        ("failed", "RuntimeError: the sandbox has no interpreter")}
    assert tasks.executions_reap(queue_empty=True) == 0, "not retried"
    progress = study_progress(study)
    assert (progress.checks_pending, len(progress.check_failures), progress.finished) == (
        0, 2, True), "a check that cannot run does not hold the study up"
    client = Client()
    client.force_login(users[0])
    page = client.get(reverse("study_detail", args=[study.id])).content.decode()
    assert "2 Pass@1 checks could not run" in page
    assert ("HumanEval/0 × static: the Pass@1 check could not run: RuntimeError: the sandbox has "
            "no interpreter") in page


def test_a_sparse_output_finished_before_dense_gets_its_divergence_when_dense_finishes(
    tiny_model_configured,
):
    study = make_study(n_items=1, conditions=[
        ("dense", {"kind": "dense"}), ("static", {"kind": "static", "threshold": 0.5})])
    study.max_new_tokens = 6
    study.save()
    services.generations_create(study=study)
    rows = Generation.objects.filter(item__study=study)
    sparse, dense = rows.get(condition__name="static"), rows.get(condition__name="dense")
    assert tasks.generate(sparse.id) == "done"
    sparse.refresh_from_db()
    assert "kl_from_dense" not in sparse.telemetry, "no dense answer yet"
    assert tasks.generate(dense.id) == "done"
    sparse.refresh_from_db()
    assert sparse.telemetry["kl_from_dense"] > 0
    assert selectors.divergence_work(generation_id=dense.id) == [], "measured once"


def _waiting(queue: str) -> int:
    from webapp.celery import app

    with app.connection_for_write() as connection:
        try:
            return connection.default_channel.queue_declare(queue=queue, passive=True).message_count
        except connection.channel_errors:
            return 0


def test_each_models_work_goes_to_its_own_queue_and_the_sweep_keeps_it_there(
    django_capture_on_commit_callbacks,
):
    from annotations.conditions import build_condition
    from annotations.models import Calibration, Condition, ModelEntry

    purge_queues(["generation", "generation.smol"])
    smol = ModelEntry.objects.create(key="smol", path="/models/smol", status="valid")
    built = build_condition(kind="static", values={"target_sparsity_percent": "40"},
                            name="static 40% on smol")
    study = make_study(n_items=2, conditions=[
        ("dense", {"kind": "dense"}), ("smol", {"kind": "dense"}), (built.name, built.policy),
    ])
    study.conditions.exclude(name="dense").update(model=smol)
    services.calibrations_create(study=study, built=[built])
    services.generations_create(study=study)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.generations_enqueue(study=study) == 4
        assert tasks.calibrations_enqueue(study=study)
    # Two outputs each; the calibration job (for smol's condition) on smol's queue too.
    assert (_waiting("generation"), _waiting("generation.smol")) == (2, 3)

    purge_queues(["generation", "generation.smol"])
    with django_capture_on_commit_callbacks(execute=True):
        sent = tasks.generations_reap(queue_empty=lambda queue: queue == "generation.smol")
        assert sent == 2, "only the queue that lost its messages is refilled"
        assert tasks.calibrations_reap(queue_empty=True) == 1
    assert (_waiting("generation"), _waiting("generation.smol")) == (0, 3)
    [job] = Calibration.objects.all()
    assert job.condition.model == smol
    assert services.calibrations_claim(study_id=study.id) == [], "not the default's job"
    assert services.calibrations_claim(study_id=study.id, model_key="smol") == [job]
    assert Condition.objects.filter(study=study, model__isnull=True).count() == 1
    purge_queues(["generation", "generation.smol"])


def test_an_alignment_vector_condition_runs_merged_weights_fingerprinted_once(
    tmp_path, settings
):
    """The worker merges θ_base + λ·(θ_aligned − θ_base) once per (base, aligned, λ), any
    policy composes with it, and each output records the merged weights' fingerprint, the
    models' keys, λ and what loading cost."""
    from inference.merge import merge
    from inference.model_info import describe
    from tests.support.models import perturbed_copy, save_tiny

    settings.MODEL_CACHE_DIR = tmp_path / "cache"
    base = save_tiny(tmp_path / "base")
    aligned = perturbed_copy(base, tmp_path / "aligned", seed=1, scale=0.5)
    entries = {}
    for key, path in (("tiny-base", base), ("tiny-aligned", aligned)):
        entries[key] = services.model_register(key=key, path=str(path))
        assert tasks.model_validate(entries[key].id) == "valid"
        entries[key].refresh_from_db()
    study = make_study(n_items=1, conditions=[
        ("half dense", {"kind": "dense"}), ("half static", {"kind": "static", "threshold": 0.1}),
        ("base dense", {"kind": "dense"}),
    ])
    study.max_new_tokens = 4
    study.save()
    study.conditions.update(model=entries["tiny-base"])
    study.conditions.filter(name__startswith="half").update(
        aligned_model=entries["tiny-aligned"], alignment_lambda=0.5)
    services.generations_create(study=study)
    rows = Generation.objects.filter(item__study=study)
    assert {tasks.generate(g.id) for g in rows} == {"done"}

    merged = merge(base, aligned, 0.5, cache_dir=settings.MODEL_CACHE_DIR)
    assert not merged.built, "the worker built it already: the cache serves it"
    merged_fp = describe(merged.path, cache_root=settings.MODEL_CACHE_DIR).fingerprint
    assert merged_fp not in {e.fingerprint for e in entries.values()}
    by_name = {g.condition.name: g for g in rows.select_related("condition")}
    for name in ("half dense", "half static"):
        facts = by_name[name].provenance
        assert by_name[name].model_fingerprint == facts["model_fingerprint"] == merged_fp
        assert (facts["model_key"], facts["aligned_model_key"], facts["alignment_lambda"]) == (
            "tiny-base", "tiny-aligned", 0.5)
        assert facts["model_load_s"] > 0
    # Both policies ran on one load of the merged weights: built once, then reused.
    assert by_name["half dense"].provenance["model_merge_built"] is True
    assert by_name["half static"].provenance["model_load_s"] == (
        by_name["half dense"].provenance["model_load_s"])
    plain = by_name["base dense"].provenance
    assert plain["model_fingerprint"] == entries["tiny-base"].fingerprint
    assert "aligned_model_key" not in plain
    # Divergence from dense is measured within one set of weights only.
    static = by_name["half static"].telemetry
    assert static["divergence_tokens"] == by_name["half dense"].new_tokens
