"""Real Celery worker processes generate, score and recover a tiny study with the real model."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotations import services, tasks
from annotations.models import (
    JOB_GAVE_UP,
    Execution,
    ExecutionJob,
    Generation,
    Item,
    JudgeVerdict,
    Pair,
    Problem,
)
from evaluation import datasets
from inference.model_info import default_model_path, fingerprint_file
from reports.build import study_report
from tests.annotations.conftest import finish_generations, make_study
from tests.support.worker import celery_worker, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _unfinished(study) -> bool:
    return Generation.objects.filter(item__study=study, status__in=["pending", "running"]).exists()


def test_worker_generates_scores_and_pairs_every_item_condition(tmp_path):
    services.problems_import(tasks=datasets.load_humaneval())
    problem = Problem.objects.get(dataset="humaneval", task_id="HumanEval/0")
    study = make_study(
        n_items=1,
        conditions=[
            ("dense", {"kind": "dense"}),
            ("static t=0.1", {"kind": "static", "threshold": 0.1}),
        ],
    )
    study.max_new_tokens = 24
    study.save()
    Item.objects.filter(study=study).update(problem=problem, prompt=problem.prompt)
    assert services.generations_create(study=study) == 2
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path) as worker:
        assert tasks.generations_enqueue(study=study) == 2
        wait_for(lambda: not _unfinished(study), timeout_s=300, what="both generations",
                 log_path=log_path, process=worker)
        wait_for(lambda: Execution.objects.filter(generation__item__study=study).count() == 2,
                 timeout_s=120, what="both Pass@1 checks", log_path=log_path, process=worker)
    rows = {g.condition.name: g for g in Generation.objects.filter(item__study=study)}
    for name, g in rows.items():
        assert g.status == "done", f"{name}: {g.status} {g.error}"
        assert g.text.strip() and 0 < g.new_tokens <= 24
        assert g.latency_s > 0 and g.tokens_per_s > 0 and g.peak_rss_bytes > 0
        assert g.model_fingerprint and g.attempts == 1
        # 24 tokens cannot finish this function: the check runs and fails, it does not crash.
        assert g.execution.status in {"failed", "error"}, g.execution.stderr
    assert rows["dense"].active_fraction == 1.0
    assert rows["static t=0.1"].active_fraction < 1.0
    assert Pair.objects.filter(study=study).count() == 1


def test_redelivered_task_for_a_done_generation_changes_nothing(tmp_path):
    """At-least-once delivery: a second message for a finished row must be a no-op."""
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    study.max_new_tokens = 4
    study.save()
    services.generations_create(study=study)
    g = Generation.objects.get(item__study=study)
    log_path = tmp_path / "worker.log"
    from annotations.tasks import generate

    with celery_worker(log_path) as worker:
        generate.delay(g.id)
        wait_for(lambda: Generation.objects.get(id=g.id).status == "done", timeout_s=300,
                 what="the generation", log_path=log_path, process=worker)
        first = Generation.objects.get(id=g.id)
        generate.delay(g.id)
        wait_for(lambda: "skipped" in log_path.read_text(), timeout_s=60,
                 what="the redelivered task to be skipped", log_path=log_path, process=worker)
    again = Generation.objects.get(id=g.id)
    assert (again.text, again.attempts, again.finished_at) == (first.text, 1, first.finished_at)


def test_killed_worker_job_is_redone_once_by_the_next_worker(tmp_path):
    """kill -9 mid-generation: the lease runs out, beat's sweep re-sends it, a new worker
    finishes it; one row, two attempts, never a third."""
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    study.max_new_tokens = 400
    study.save()
    services.generations_create(study=study)
    g = Generation.objects.get(item__study=study)
    log_path = tmp_path / "worker.log"
    short_lease = {"GENERATION_LEASE_S": "8"}
    with celery_worker(log_path, env=short_lease) as doomed:
        tasks.generations_enqueue(study=study)
        wait_for(lambda: Generation.objects.get(id=g.id).status == "running", timeout_s=120,
                 what="the first worker to start generating", log_path=log_path, process=doomed)
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
    assert Generation.objects.get(id=g.id).status == "running"
    study.max_new_tokens = 8  # the redo need not be long
    study.save()
    with celery_worker(
        log_path, env={"REAP_INTERVAL_S": "2"}, beat=True, purge=False
    ) as rescuer:
        wait_for(lambda: Generation.objects.get(id=g.id).status == "done", timeout_s=300,
                 what="the next worker to redo the generation", log_path=log_path,
                 process=rescuer)
    assert Generation.objects.filter(item__study=study).count() == 1
    redone = Generation.objects.get(id=g.id)
    assert redone.attempts == 2 and redone.text.strip()


def test_enqueueing_a_study_twice_makes_no_duplicates(tmp_path):
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"}),
                                              ("static", {"kind": "static", "threshold": 0.1})])
    study.max_new_tokens = 4
    study.save()
    services.generations_create(study=study)
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path) as worker:
        tasks.generations_enqueue(study=study)
        services.generations_create(study=study)
        tasks.generations_enqueue(study=study)
        wait_for(lambda: not _unfinished(study), timeout_s=300, what="the generations",
                 log_path=log_path, process=worker)
    assert Generation.objects.filter(item__study=study).count() == 2
    assert set(Generation.objects.values_list("attempts", flat=True)) == {1}


def test_two_workers_share_a_study_without_running_any_row_twice(tmp_path):
    study = make_study(n_items=2)  # 2 items x 3 conditions
    study.max_new_tokens = 4
    study.save()
    services.generations_create(study=study)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    with celery_worker(log_a) as a, celery_worker(log_b, purge=False) as b:
        tasks.generations_enqueue(study=study)
        tasks.generations_enqueue(study=study)  # every row is sent twice on purpose
        wait_for(lambda: not _unfinished(study), timeout_s=400, what="the generations",
                 log_path=log_a, process=a)
        assert b.poll() is None, "the second worker died"
    rows = Generation.objects.filter(item__study=study)
    assert rows.count() == 6 and {g.status for g in rows} == {"done"}
    assert {g.attempts for g in rows} == {1}, "a row was run twice"


def _answers(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), 2).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _answers("127.0.0.1", 5672), reason="no RabbitMQ on 127.0.0.1:5672")
def test_worker_on_rabbitmq(tmp_path):
    """The same settings serve RabbitMQ: a worker and a producer both on amqp://."""
    from celery import Celery
    from kombu import Connection

    amqp = "amqp://guest:guest@127.0.0.1:5672//"
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    study.max_new_tokens = 4
    study.save()
    services.generations_create(study=study)
    g = Generation.objects.get(item__study=study)
    # CELERY_BROKER_URL in the environment (CI sets Redis) would override broker=, so the
    # producer gets an explicit AMQP connection.
    producer = Celery(set_as_current=False)  # the project app stays the current one
    connection = Connection(amqp)
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path, env={"CELERY_BROKER_URL": amqp}, purge=False) as worker:
        # On AMQP a message to an exchange with no queue bound yet is dropped: wait until
        # the worker has declared its queues.
        wait_for(lambda: " ready." in log_path.read_text(), timeout_s=120,
                 what="the worker to be ready", log_path=log_path, process=worker)
        producer.send_task("annotations.tasks.generate", args=[g.id], queue="generation",
                           connection=connection)
        wait_for(lambda: Generation.objects.get(id=g.id).status == "done", timeout_s=300,
                 what="the generation sent through RabbitMQ", log_path=log_path, process=worker)
    connection.release()
    assert "amqp://guest:**@127.0.0.1:5672//" in log_path.read_text()


def _problem(dataset: str, task_id: str, **load) -> Problem:
    services.problems_import(tasks=datasets.load_tasks(dataset, **load))
    return Problem.objects.get(dataset=dataset, task_id=task_id)


def test_execution_worker_contains_hostile_code_and_keeps_serving(tmp_path):
    """Outputs that attack the machine are scored as failures; the next check still passes."""
    humaneval = _problem("humaneval", "HumanEval/0")
    study = make_study(n_items=1, conditions=[
        (name, {"kind": "dense"}) for name in ("loop", "fork", "net", "secrets", "good")
    ])
    Item.objects.filter(study=study).update(problem=humaneval, prompt=humaneval.prompt)
    services.generations_create(study=study)
    hostile = {
        "loop": "```python\ndef has_close_elements(numbers, threshold):\n    while True:\n"
                "        pass\n```",
        "fork": "```python\nimport os\ndef has_close_elements(numbers, threshold):\n"
                "    while True:\n        os.fork()\n```",
        "net": "```python\nimport socket\ndef has_close_elements(numbers, threshold):\n"
               "    socket.create_connection(('127.0.0.1', 5432), 2)\n    return True\n```",
        "secrets": "```python\nimport os\ndef has_close_elements(numbers, threshold):\n"
                   "    assert 'DATABASE_URL' in os.environ or "
                   f"open({str(settings.VAR_DIR / 'secret_key')!r}).read()\n"
                   "    return True\n```",
        "good": "```python\n" + "def has_close_elements(numbers, threshold):\n"
                + humaneval.reference + "\n```",
    }
    for g in Generation.objects.filter(item__study=study).select_related("condition"):
        g.text, g.status = hostile[g.condition.name], Generation.Status.DONE
        g.save()
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path, queues="execution") as worker:
        assert tasks.executions_enqueue(study=study) == 5
        wait_for(lambda: Execution.objects.filter(generation__item__study=study).count() == 5,
                 timeout_s=180, what="all five checks", log_path=log_path, process=worker)
        assert worker.poll() is None, "the worker died"
    status = {e.generation.condition.name: e.status
              for e in Execution.objects.filter(generation__item__study=study)}
    assert status["loop"] == "timeout"
    assert status["good"] == "passed", status
    for name in ("fork", "net", "secrets"):
        assert status[name] in {"failed", "error", "timeout"}, (name, status[name])


def test_study_over_humaneval_mbpp_and_ds1000_runs_end_to_end(tmp_path):
    problems = [
        _problem("humaneval", "HumanEval/2"),
        _problem("mbpp", "mbpp/11"),
        _problem("ds1000", "ds1000/9001", path="tests/evaluation/fixtures/ds1000_sample.jsonl"),
    ]
    study = make_study(n_items=0, conditions=[("dense", {"kind": "dense"})])
    study.max_new_tokens = 48
    study.save()
    Item.objects.bulk_create(p.new_item(study) for p in problems)
    services.generations_create(study=study)
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path) as worker:
        tasks.generations_enqueue(study=study)
        wait_for(lambda: Execution.objects.filter(generation__item__study=study).count() == 3,
                 timeout_s=400, what="generation and Pass@1 of all three items",
                 log_path=log_path, process=worker)
    for e in Execution.objects.filter(generation__item__study=study).select_related(
        "generation__item"
    ):
        assert e.status in {"passed", "failed", "error", "timeout"}
        assert e.code.strip(), f"nothing was extracted for {e.generation.item.task_id}"
    rows = {r["condition"]: r for r in study_report(study, bootstrap=0).summary["conditions"]}
    assert rows["dense"]["n_checked"] == 3, rows["dense"]


def test_worker_runs_the_model_split_by_a_placement_plan(tmp_path):
    """MODEL_PLAN: the worker splits the model hot/cold as the plan says (both halves on
    the CPU here; MODEL_HOT_DEVICE=cuda on a GPU machine) and its output is the dense one."""
    from inference.config import SHAPES
    from inference.generate import generate
    from inference.loading import load_model
    from inference.plan import parse_bytes, plan_placement
    from inference.policies import DensePolicy

    plan_path = tmp_path / "plan.json"
    plan = plan_placement(SHAPES["smollm2-135m"], parse_bytes("300MiB"), weight_format="f32")
    plan.save(plan_path)
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    study.max_new_tokens = 8
    study.save()
    services.generations_create(study=study)
    log_path = tmp_path / "worker.log"
    env = {"MODEL_PLAN": str(plan_path), "MODEL_HOT_DEVICE": "cpu", "MODEL_COLD_DEVICE": "cpu"}
    with celery_worker(log_path, queues="generation", env=env) as worker:
        tasks.generations_enqueue(study=study)
        wait_for(lambda: not _unfinished(study), timeout_s=300, what="the generation",
                 log_path=log_path, process=worker)
    g = Generation.objects.get(item__study=study)
    assert g.status == "done", f"{g.status}: {g.error}"
    # The split served part of the activations from the hot block (an unsplit model: 1.0).
    assert 0.0 < g.telemetry["hot_activation_share"] < 1.0, g.telemetry
    plain = generate(load_model(), g.item.prompt, DensePolicy(), max_new_tokens=8,
                     seed=g.seed, temperature=study.temperature)
    assert g.text == plain.text, "a hot/cold split must not change the dense output"


def _group_gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("ctrl_c", ["once", "twice"])
def test_ctrl_c_once_stores_the_output_twice_puts_it_back_and_leaves_no_process(
    tmp_path, ctrl_c
):
    """scripts/run.sh's signals to a prefork worker like `make run`'s: the first Ctrl-C
    (SIGTERM to the main process) is a warm shutdown, the output being written finishes
    and is stored; a second (SIGTERM to the worker's process group) cancels it and its row
    is pending again at once, not after its lease. Either way no process is left."""
    study = make_study(n_items=1, conditions=[("dense", {"kind": "dense"})])
    study.max_new_tokens = 48 if ctrl_c == "once" else 2000
    study.save()
    services.generations_create(study=study)
    g = Generation.objects.get(item__study=study)
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path, pool="prefork") as worker:
        tasks.generations_enqueue(study=study)
        wait_for(lambda: Generation.objects.get(id=g.id).status == "running", timeout_s=300,
                 what="the worker to start generating", log_path=log_path, process=worker)
        os.kill(worker.pid, signal.SIGTERM)
        if ctrl_c == "twice":
            time.sleep(2)
            os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=600)
        time.sleep(1)
        assert _group_gone(worker.pid), "a process of the worker was left behind"
    row = Generation.objects.get(id=g.id)
    if ctrl_c == "once":
        assert row.status == "done" and row.text and row.new_tokens, log_path.read_text()[-3000:]
    else:
        assert (row.status, row.lease_until, row.attempts) == ("pending", None, 0), \
            log_path.read_text()[-3000:]


def test_beat_resends_lost_and_dead_checks_redoes_a_dead_one_once_then_fails_it(
    tmp_path, users
):
    """Nobody sends a check: one lost its message, one's worker died once (kill -9 leaves it
    running past its lease), one's died twice. Beat's sweep sends them: the first two are
    scored, the third is failed with the reason, which the study page lists."""
    humaneval = _problem("humaneval", "HumanEval/0")
    study = make_study(n_items=1, conditions=[
        (name, {"kind": "dense"}) for name in ("lost", "died once", "died twice")
    ])
    Item.objects.filter(study=study).update(problem=humaneval, prompt=humaneval.prompt)
    services.generations_create(study=study)
    Generation.objects.filter(item__study=study).update(
        status=Generation.Status.DONE, text="```python\ndef has_close_elements(numbers, "
        f"threshold):\n{humaneval.reference}\n```",
    )
    assert services.execution_jobs_create(study=study) == 3
    jobs = ExecutionJob.objects.filter(generation__item__study=study)
    passed = timezone.now() - timedelta(seconds=1)
    jobs.exclude(generation__condition__name="lost").update(
        status=ExecutionJob.Status.RUNNING, lease_until=passed, attempts=1
    )
    jobs.filter(generation__condition__name="died twice").update(attempts=2)
    log_path = tmp_path / "worker.log"
    with celery_worker(log_path, env={"REAP_INTERVAL_S": "2"}, beat=True) as worker:
        wait_for(lambda: not jobs.filter(status__in=["pending", "running"]).exists(),
                 timeout_s=180, what="the sweep to send the three checks", log_path=log_path,
                 process=worker)
    by_name = {j.generation.condition.name: j for j in jobs.select_related("generation__condition")}
    assert (by_name["lost"].status, by_name["lost"].attempts) == ("done", 1)
    assert (by_name["died once"].status, by_name["died once"].attempts) == ("done", 2)
    assert (by_name["died twice"].status, by_name["died twice"].error) == ("failed", JOB_GAVE_UP)
    verdicts = dict(Execution.objects.filter(generation__item__study=study)
                    .values_list("generation__condition__name", "status"))
    assert verdicts == {"lost": "passed", "died once": "passed"}
    staff = Client()
    staff.force_login(users[0])
    page = staff.get(reverse("study_detail", args=[study.id])).content.decode()
    assert ("HumanEval/0 × died twice: the Pass@1 check could not run: gave up after 2 tries: "
            "the worker stopped (crashed or was killed) during each one") in page
    assert "1 Pass@1 check could not run" in page



def test_a_judge_worker_judges_a_pair_through_the_projects_own_server(tmp_path, settings):
    """The study page's server of the dense condition (the shipped 135M model) is the judge's
    endpoint; a worker consuming only the judge queue asks it about both orders of the pair,
    stores what it said and its token counts, and the report calls it a weak judge."""
    study = make_study(n_items=1, conditions=[
        ("dense", {"kind": "dense"}), ("static t=0.1", {"kind": "static", "threshold": 0.1}),
    ])  # fmt: skip
    finish_generations(study)
    server = services.condition_server_start(condition=study.conditions.get(name="dense"))
    log_path = tmp_path / "worker.log"
    try:
        wait_for(lambda: services.server_status(server) in ("running", "exited"),
                 timeout_s=300, what="the condition's server",
                 log_path=services.servers.server_log_path(server), process=None)  # fmt: skip
        assert services.server_status(server) == "running", services.server_log_tail(server)
        with celery_worker(log_path, queues="judge", env={"JUDGE_MAX_TOKENS": "24"}) as worker:
            sent = tasks.judge_verdicts_enqueue(
                study=study, url=server.url, model=server.model_name
            )
            assert sent == 2
            waiting = JudgeVerdict.objects.filter(
                pair__study=study, status__in=["pending", "running"]
            )
            wait_for(lambda: not waiting.exists(), timeout_s=600, what="both verdicts",
                     log_path=log_path, process=worker)  # fmt: skip
    finally:
        services.condition_server_stop(server=server)
    shipped = fingerprint_file(default_model_path(), settings.MODEL_CACHE_DIR)
    for verdict in JudgeVerdict.objects.filter(pair__study=study):
        assert verdict.status == "done", verdict.error
        assert verdict.answer and verdict.answered_model == "dense"
        assert verdict.prompt_tokens > 100 and 1 <= verdict.completion_tokens <= 24
        assert verdict.answered_fingerprint == shipped
    judge = study_report(study, bootstrap=20).summary["judge"]["judges"][0]
    assert judge["verdicts"] == 2 and "weak judge" in judge["weak_note"]
