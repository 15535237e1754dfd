"""Celery tasks: thin shells that take ids, call a service and return a word; and the
functions that send them (`generations_enqueue`, `calibrations_enqueue`,
`executions_enqueue`, `judge_verdicts_enqueue`, and beat's sweep `reap`), so that the
services never import their tasks.

Delivery is at least once (acks_late); every task is safe to run twice because the
database row, not the message, says what is done."""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from billiard.process import current_process
from celery import current_app, shared_task
from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown
from django.conf import settings
from django.db import OperationalError, connection
from django.db.models import QuerySet
from django.utils import timezone

from annotations import selectors, services
from annotations.models import (
    Calibration,
    ExecutionJob,
    Generation,
    JudgeVerdict,
    ModelEntry,
    Study,
)
from annotations.queues import DEFAULT_MODEL_KEY, DEFAULT_QUEUE, generation_queue, worker_queues
from evaluation.code_extraction import extract_answer_code
from evaluation.judge import ask_judge
from evaluation.sandbox.checks import check_candidate
from inference.model_info import PromptTooLong

log = logging.getLogger(__name__)

# A database that is restarting is worth waiting for; anything else is recorded.
_TRANSIENT = (OperationalError,)
_RETRY = {"autoretry_for": _TRANSIENT, "retry_backoff": 5, "retry_backoff_max": 120,
          "max_retries": 8}


class WorkerStopping(BaseException):
    """The output being written is cancelled (a second Ctrl-C on `make run`). A
    BaseException, so no `except Exception` records it as the generation's failure."""


# The generation this worker process is writing, if any (read by the SIGTERM handler).
_writing: int | None = None


def _on_sigterm(signum: int, frame) -> None:
    if _writing is not None:
        raise WorkerStopping
    _end_process()


def _end_process() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


@shared_task(queue="generation", **_RETRY)
def generate(generation_id: int) -> str:
    """Run the model for one generation row, unless it is done or held elsewhere."""
    global _writing
    generation = services.generation_claim(generation_id=generation_id)
    if generation is None:
        return "skipped"
    _writing = generation_id
    # SIGTERM (scripts/run.sh's second Ctrl-C) while the output is written becomes
    # `WorkerStopping` here, which puts the row back to pending at once, not after its
    # lease. Set in the task, in the pool process that runs it (celery resets those
    # processes' handlers after they start); never in a worker's main process (solo pool),
    # whose SIGTERM stays celery's warm shutdown.
    if current_process().name != "MainProcess" and (
        threading.current_thread() is threading.main_thread()
    ):
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _generate(generation)
    except WorkerStopping:
        services.generation_release(generation_id=generation_id)
        log.warning("generation %s cancelled (worker stopping): pending again", generation_id)
        # End this process as the signal asked: interrupted mid-import or mid-decode, it
        # must not take another task (its message is requeued: reject_on_worker_lost).
        _end_process()
    finally:
        _writing = None


def _generate(generation: Generation) -> str:
    generation_id = generation.id
    try:
        # Imported here so the web process, which only enqueues, never loads torch.
        from annotations.model_cache import condition_weights, model_load
        from inference.generate import generate as run_generation
        from inference.policies import Policy
        from inference.provenance import kernel_path, machine_provenance, resident_bytes

        policy = Policy.from_json(generation.condition.policy)
        weights = condition_weights(generation.condition)
        load = model_load(weights)
        loaded = load.loaded
        rss_start_bytes = resident_bytes()
        result = run_generation(
            loaded,
            generation.item.prompt,
            policy,
            max_new_tokens=generation.item.study.max_new_tokens,
            seed=generation.seed,
            temperature=generation.item.study.temperature,
        )
        provenance = {**machine_provenance(loaded.model, loaded.path),
                      "kernel_path": kernel_path(loaded.model),
                      **_model_provenance(generation.condition, loaded.fingerprint), **load.facts()}
    except PromptTooLong as exc:  # the study's input, not our fault: no traceback in the log
        log.warning("generation %s refused: %s", generation_id, exc)
        services.generation_fail(generation=generation, error=f"Refused: {exc}")
        return "failed"
    except Exception as exc:  # a permanent error: recorded and shown on the study page
        log.exception("generation %s failed", generation_id)
        services.generation_fail(generation=generation, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    stored = _complete(generation, result, loaded.fingerprint, provenance=provenance,
                       rss_start_bytes=rss_start_bytes)
    if stored and generation.item.problem_id is not None:
        execute.delay_on_commit(generation_id)
    if stored:
        _record_divergences(loaded, generation)
    return "done" if stored else "lost-lease"


def _model_provenance(condition, fingerprint: str) -> dict:
    """Which model made an output, by key and content fingerprint (for an alignment vector,
    the merged weights'; its aligned model and λ beside), and which worker, serving which
    keys, held it."""
    facts = {"model_key": condition.model_key, "model_fingerprint": fingerprint,
             "worker": generate.request.hostname or "",
             "worker_model_keys": list(settings.MODEL_KEYS)}
    if condition.aligned_model_id:
        facts |= {"aligned_model_key": condition.aligned_model.key,
                  "alignment_lambda": condition.alignment_lambda}
    return facts


def _record_divergences(loaded, generation: Generation) -> None:
    """Divergence from dense (`inference.divergence`) of whatever this finished output made
    measurable (`selectors.divergence_work`). The output is stored already: a failure here
    is logged and costs only the measurement."""
    from inference.divergence import divergence_from_dense
    from inference.policies import Policy

    try:
        for target_id, dense_ids, policy in selectors.divergence_work(generation_id=generation.id):
            divergence = divergence_from_dense(
                loaded, generation.item.prompt, dense_ids, Policy.from_json(policy)
            )
            services.divergence_record(generation_id=target_id, divergence=divergence)
    except Exception:
        log.exception("generation %s: divergence from dense not measured", generation.id)


# Waits between tries when the database is down just as a finished output is stored: the
# output cost minutes of model time, and a task retry would find its row still leased.
_STORE_WAITS_S = (1, 2, 4, 8, 15, 30)


def _complete(generation: Generation, result, model_fingerprint: str, **facts) -> bool:
    """`services.generation_complete` (with `facts`: provenance, resident set at the start),
    waiting out a database restart (about a minute)."""
    for wait_s in _STORE_WAITS_S:
        try:
            return services.generation_complete(
                generation=generation, result=result, model_fingerprint=model_fingerprint,
                **facts,
            )
        except OperationalError as error:
            log.warning("generation %s: database unavailable while storing the output (%s); "
                        "trying again in %ss", generation.id, error, wait_s)
            connection.close()  # the next try opens a fresh one
            time.sleep(wait_s)
    return services.generation_complete(
        generation=generation, result=result, model_fingerprint=model_fingerprint, **facts
    )


@shared_task(queue="execution", **_RETRY)
def execute(generation_id: int) -> str:
    """Extract the code of a finished generation and score it in the sandbox, once (its
    check is claimed like a generation: a dead worker's check is redone once)."""
    generation = services.execution_claim(generation_id=generation_id)
    if generation is None:
        return "skipped"
    try:
        task = generation.item.problem.as_task()
        code = extract_answer_code(task, generation.text)
        result = check_candidate(task, code)
    except Exception as exc:  # ours, not the candidate's: recorded and shown on the study page
        log.exception("Pass@1 check of generation %s failed", generation_id)
        services.execution_fail(generation_id=generation_id, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    execution, _ = services.execution_record(generation=generation, code=code, result=result)
    return execution.status


@shared_task(queue="judge", **_RETRY)
def judge(verdict_id: int) -> str:
    """Ask the LLM judge about one pair in one order, once (claimed like a generation; the
    openai client retries 429/5xx with backoff, past that the verdict fails with the reason)."""
    verdict = services.judge_verdict_claim(verdict_id=verdict_id)
    if verdict is None:
        return "skipped"
    prompt, first, second = services.judge_verdict_shown(verdict)
    try:
        answer = ask_judge(
            base_url=verdict.judge_url, model=verdict.judge_model,
            api_key=os.environ.get(settings.JUDGE_API_KEY_ENV), prompt=prompt, first=first,
            second=second, max_tokens=settings.JUDGE_MAX_TOKENS,
            max_retries=settings.JUDGE_MAX_RETRIES,
        )  # fmt: skip
    except Exception as exc:  # the endpoint's failure, recorded; the key never is
        log.exception("LLM judge on verdict %s failed", verdict_id)
        services.judge_verdict_fail(verdict_id=verdict_id, error=f"{type(exc).__name__}: {exc}")
        return "failed"
    services.judge_verdict_record(verdict_id=verdict_id, answer=answer)
    return answer.label or "unparseable"


@shared_task(queue="generation", **_RETRY)
def calibrate(study_id: int, model_key: str = DEFAULT_MODEL_KEY) -> str:
    """Profile the model for the study's waiting calibrations of conditions on `model_key`
    (this worker's model: the task travels on its queue) and store their thresholds; then
    create and send those conditions' generations (a study generates by itself). Each
    condition is profiled on its own weights: an alignment vector's λ changes them."""
    claimed = services.calibrations_claim(study_id=study_id, model_key=model_key)
    if not claimed:
        return "skipped"
    # Imported here so the web process, which only enqueues, never loads torch.
    from annotations.model_cache import condition_weights, loaded_model

    study = claimed[0].condition.study
    groups: dict[tuple, list] = {}
    for row in claimed:
        groups.setdefault((condition_weights(row.condition), row.prompt_set), []).append(row)
    stored = 0
    for (weights, prompt_set), rows in groups.items():
        try:
            from inference.profile import CALIBRATION_NEW_TOKENS, calibrate, profile_model

            prompts = selectors.calibration_prompts(study=study, prompt_set=prompt_set)
            profile = profile_model(
                loaded_model(weights), prompts, max_new_tokens=CALIBRATION_NEW_TOKENS,
                progress=functools.partial(_calibration_progress, rows),
            )
            chosen = [
                calibrate(profile, row.condition.policy, row.target_sparsity) for row in rows
            ]
        except Exception as exc:  # a permanent error: recorded and shown on the setup page
            log.exception("calibration of study %s failed", study_id)
            services.calibrations_fail(calibrations=rows, error=f"{type(exc).__name__}: {exc}")
            continue
        for row, result in zip(rows, chosen, strict=True):
            stored += services.calibration_finish(
                calibration=row, policy=result.policy.to_dict(), expected_sparsity=result.sparsity
            )
    if stored:
        services.generations_create(study=study)
        generations_enqueue(study=study)
    return f"calibrated {stored}"


def _calibration_progress(rows: list, share: float) -> None:
    services.calibrations_progress(calibrations=rows, progress=share)


@shared_task(queue="generation")
def reap() -> dict[str, int]:
    """Periodic (celery beat): re-send the generations, calibration jobs and Pass@1 checks
    whose worker died, or whose message the broker lost. Returns how many of each were sent."""
    # Generations and calibrations travel on their model's queue: one look serves both.
    queue_empty = functools.cache(_queue_empty)
    return {
        "generations": generations_reap(queue_empty=queue_empty),
        "calibrations": calibrations_reap(queue_empty=queue_empty),
        "executions": executions_reap(queue_empty=_queue_empty("execution")),
        "judge_verdicts": judge_verdicts_reap(queue_empty=_queue_empty("judge")),
    }


def generations_enqueue(*, study: Study) -> int:
    """Send every unfinished generation of the study to the worker queue, once the
    current transaction commits.

    Safe to call repeatedly: a task for a generation that is done, or held by a
    live worker, does nothing. Sent in `services.generation_order` (conditions
    interleaved per item, rotating), so drift over a run is spread over the conditions.
    Returns the number of tasks sent."""
    rows = Generation.objects.claimable(timezone.now()).filter(item__study=study).values_list(
        "id", "item_id", "condition__position", "sample_index", "condition__model__key"
    )
    queues = {row[0]: generation_queue(row[4] or DEFAULT_MODEL_KEY) for row in rows}
    order = services.generation_order([row[:4] for row in rows])
    return _send(generate, order, queues=queues)


def calibrations_enqueue(*, study: Study) -> bool:
    """Send the study's calibration job, once the current transaction commits, if any of
    its calibrations waits (safe to repeat: a second job finds nothing to claim)."""
    waiting = Calibration.objects.claimable(timezone.now()).filter(condition__study=study)
    keys = _model_keys(waiting, "condition")
    for key in keys:  # one job per model: each runs on a worker holding it
        calibrate.apply_async_on_commit((study.id, key), queue=generation_queue(key))
    return bool(keys)


def executions_enqueue(*, study: Study) -> int:
    """Queue the Pass@1 check of every finished, scorable, unchecked generation (safe to
    repeat: a check that is done, or held by a live worker, does nothing). Returns how many
    were sent."""
    services.execution_jobs_create(study=study)
    checks = ExecutionJob.objects.claimable(timezone.now()).filter(
        generation__item__study=study
    )
    return _send(execute, checks.values_list("generation_id", flat=True))


def judge_verdicts_enqueue(*, study: Study, url: str, model: str) -> int:
    """Make the study's verdict jobs for the judge at ``url`` called ``model`` (both orders
    of every ordinary pair) and send the ones not done or held; how many were sent."""
    services.judge_verdicts_create(study=study, url=url, model=model)
    waiting = JudgeVerdict.objects.claimable(timezone.now()).filter(
        pair__study=study, judge_url=url, judge_model=model
    )
    return _send(judge, waiting.values_list("id", flat=True))


def judge_verdicts_reap(*, queue_empty: bool = False) -> int:
    """Re-send the verdicts whose worker died or, when `queue_empty`, that still wait: the
    rule of `generations_reap`. Returns how many were sent."""
    lost = JudgeVerdict.objects.lost(timezone.now(), queue_empty=queue_empty)
    return _send(judge, lost.values_list("id", flat=True))


def generations_reap(*, queue_empty: bool | Callable[[str], bool] = False) -> int:
    """Re-send the generations whose worker died (lease expired while running), and,
    when `queue_empty` (no generation message waits in the broker), the pending ones.

    Run periodically (celery beat): the broker may have lost or acknowledged the
    message of a killed worker, so the database rows decide what is redone. A pending
    row with nothing in the queue has lost its message: a broker restarted without
    persistence forgets every queue, and one that was down at enqueue never got it."""
    now, sent = timezone.now(), 0
    for queue, rows in _per_queue(Generation.objects.claimable(now), "condition"):
        lost = rows.lost(now, queue_empty=_is_empty(queue_empty, queue))
        ids = list(lost.values_list("id", flat=True))
        sent += _send(generate, ids, queues=dict.fromkeys(ids, queue))
    return sent


def calibrations_reap(*, queue_empty: bool | Callable[[str], bool] = False) -> int:
    """Re-send the calibration job of every study with a calibration whose worker died,
    or, when `queue_empty`, one still waiting: the same rule as `generations_reap`.

    The job redoes a dead worker's calibration once; on the next death it marks it failed
    with the reason (`services.calibrations_claim`), and the setup page offers a retry.
    Returns how many jobs were sent."""
    now, sent = timezone.now(), 0
    for queue, rows in _per_queue(Calibration.objects.claimable(now), "condition"):
        lost = rows.lost(now, queue_empty=_is_empty(queue_empty, queue))
        key = _queue_model_key(queue)
        for study_id in lost.order_by().values_list("condition__study_id", flat=True).distinct():
            calibrate.apply_async_on_commit((study_id, key), queue=queue)
            sent += 1
    return sent


def executions_reap(*, queue_empty: bool = False) -> int:
    """Re-send the Pass@1 check of every generation whose check's worker died, or, when
    `queue_empty` (no message waits on the execution queue), whose check still waits: the
    rule of `generations_reap`. A dead worker's check is redone once; on the next death it
    is failed with the reason, which the study page lists. Returns how many were sent."""
    lost = ExecutionJob.objects.lost(timezone.now(), queue_empty=queue_empty)
    return _send(execute, lost.values_list("generation_id", flat=True))


def _send(task, generation_ids: Iterable[int], *, queues: dict[int, str] | None = None) -> int:
    """Send the task once per generation when the transaction commits, to the queue
    `queues` names for it (default: the task's own); how many."""
    ids = list(generation_ids)
    for generation_id in ids:
        if queues is None:
            task.delay_on_commit(generation_id)
        else:
            task.apply_async_on_commit((generation_id,), queue=queues[generation_id])
    return len(ids)


def _model_keys(rows: QuerySet, condition: str) -> list[str]:
    """The model keys of `rows`' conditions (`condition`: the path from a row to it)."""
    keys = rows.order_by().values_list(f"{condition}__model__key", flat=True).distinct()
    return sorted({key or DEFAULT_MODEL_KEY for key in keys})


def _per_queue(rows: QuerySet, condition: str) -> Iterator[tuple[str, QuerySet]]:
    """`rows` split by the generation queue of their condition's model."""
    for key in _model_keys(rows, condition):
        if key == DEFAULT_MODEL_KEY:
            yield DEFAULT_QUEUE, rows.filter(**{f"{condition}__model__isnull": True})
        else:
            yield generation_queue(key), rows.filter(**{f"{condition}__model__key": key})


def _queue_model_key(queue: str) -> str:
    return DEFAULT_MODEL_KEY if queue == DEFAULT_QUEUE else queue.split(".", 1)[1]


def _is_empty(queue_empty: bool | Callable[[str], bool], queue: str) -> bool:
    """Whether `queue` holds no message: `queue_empty` answers for every queue (a bool,
    as tests pass) or asks the broker about each (a function, as the sweep passes)."""
    return queue_empty(queue) if callable(queue_empty) else queue_empty


def _queue_empty(name: str) -> bool:
    """Whether no message waits in the broker queue (one that does not exist is empty).

    Messages a worker holds unacknowledged are not counted: their rows are running."""
    with current_app.connection_for_write() as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=name, passive=True)
        except connection.channel_errors:  # kombu's, py-amqp's "NOT_FOUND"
            return True
    return declared.message_count == 0


@shared_task(**_RETRY)
def model_validate(entry_id: int) -> str:
    """Validate a pending registered model on a worker serving it (the task travels on the
    model's queue, so the path is read where the model will run)."""
    entry = ModelEntry.objects.filter(id=entry_id, status=ModelEntry.Status.PENDING).first()
    if entry is None:
        return "skipped"
    return _validate(entry, worker=model_validate.request.hostname or "")


def _validate(entry: ModelEntry, *, worker: str) -> str:
    """`inference.model_info.describe` of the entry's path, stored as its verdict."""
    from inference.model_info import ModelPathError, describe

    try:
        info = describe(entry.path, cache_root=settings.MODEL_CACHE_DIR)
    except ModelPathError as exc:
        services.model_validation_record(
            entry_id=entry.id, description=None,
            error=f"no worker could load {entry.path}: {exc} (tried on {worker})",
        )
        return "invalid"
    description = {k: v for k, v in info.to_dict().items() if k != "path"}
    services.model_validation_record(entry_id=entry.id, description=description)
    return "valid"


def models_validate(*, entries: Iterable[ModelEntry]) -> int:
    """Send each pending entry's validation to its model's queue once the transaction
    commits (safe to repeat: a model no longer pending is skipped); how many were sent."""
    pending = [e for e in entries if e.status == ModelEntry.Status.PENDING]
    for entry in pending:
        model_validate.apply_async_on_commit((entry.id,), queue=entry.queue)
    return len(pending)


@celeryd_after_setup.connect
def _consume_model_queues(sender, instance, conf, **kwargs) -> None:
    """`-Q generation` means the generation queues of the worker's models (MODEL_KEYS), so a
    worker never takes a generation of a model it does not hold. (Connected here, where the
    worker imports its tasks before it starts consuming.)"""
    queues = instance.app.amqp.queues
    queues.select(worker_queues(list(queues.consume_from or {}), settings.MODEL_KEYS))


# A generation worker's heartbeat (`WorkerHeartbeat`): a thread of its main process writes
# which models it serves when it is ready and every WORKER_HEARTBEAT_S after, and validates
# its pending models once (a model registered before any worker held it).
_heartbeat_stop = threading.Event()


def _serves_models(queues: Iterable[str]) -> bool:
    return any(q == DEFAULT_QUEUE or q.startswith(f"{DEFAULT_QUEUE}.") for q in queues)


@worker_ready.connect
def _heartbeat_start(sender, **kwargs) -> None:
    if not _serves_models(sender.app.amqp.queues.consume_from or {}):
        return
    _heartbeat_stop.clear()
    threading.Thread(
        target=_heartbeat, args=(sender.hostname,), name="model-heartbeat", daemon=True
    ).start()


@worker_shutdown.connect
def _heartbeat_end(sender, **kwargs) -> None:
    if not _serves_models(sender.app.amqp.queues.consume_from or {}):
        return
    _heartbeat_stop.set()
    try:
        services.worker_heartbeat_forget(name=sender.hostname)
    except Exception:  # the database may be gone first: the row then goes stale instead
        log.exception("worker %s: heartbeat not removed", sender.hostname)


def _heartbeat(name: str) -> None:
    validated = False
    while not _heartbeat_stop.is_set():
        try:
            services.worker_heartbeat_record(
                name=name, model_keys=list(settings.MODEL_KEYS), now=timezone.now()
            )
            if not validated:
                for entry in ModelEntry.objects.filter(
                    key__in=settings.MODEL_KEYS, status=ModelEntry.Status.PENDING
                ):
                    log.info("model %s: %s", entry.key, _validate(entry, worker=name))
                validated = True
        except Exception:  # a missed beat is only a stale row; the next one tries again
            log.exception("worker %s: heartbeat not recorded", name)
        finally:
            connection.close()
        _heartbeat_stop.wait(settings.WORKER_HEARTBEAT_S)
