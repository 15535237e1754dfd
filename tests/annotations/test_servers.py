"""A condition served from the study page (issue 31): staff start ``python -m inference
serve`` for a condition (the tiny model here), the page shows its URL and status, the
official client talks to it, a restarted web process still finds it by its pid, and Stop
ends it. Only staff, and only through the study the condition belongs to."""

import re
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from django.test import Client
from django.urls import reverse

from annotations import services
from annotations.models import ConditionServer
from tests.annotations.conftest import finish_generations, make_study
from tests.support.inference_server import tiny_model_dir

pytestmark = pytest.mark.django_db

TWO = [("dense", {"kind": "dense"}), ("static t=0.1", {"kind": "static", "threshold": 0.1})]


def staff_client(users) -> Client:
    client = Client()
    client.force_login(users[0])
    return client


def wait_until(condition, *, what: str, timeout_s: float = 600) -> None:
    """Poll until condition() holds (an event: the server listening, the process gone)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def gone(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    return not cmdline.exists() or not cmdline.read_bytes()


def test_start_use_find_after_a_restart_and_stop(users, settings, tmp_path):
    settings.MODEL_PATH = str(tiny_model_dir(tmp_path))
    settings.MODEL_CACHE_DIR = tmp_path / "cache"
    settings.MODEL_DTYPE = "float32"
    study = make_study(conditions=TWO)
    static = study.conditions.get(name="static t=0.1")
    staff = staff_client(users)
    response = staff.post(reverse("condition_server_start", args=[study.id, static.id]))
    assert response.status_code == 302
    server = ConditionServer.objects.get(condition=static)
    try:
        assert 1024 <= server.port and server.url == f"http://127.0.0.1:{server.port}/v1"
        fragment = reverse("study_servers", args=[study.id])
        assert b"starting" in staff.get(fragment).content  # loading the model
        wait_until(lambda: services.server_status(server) != "starting", what="the server")
        assert services.server_status(server) == "running", services.server_log_tail(server)
        response = staff.get(fragment)
        assert response.status_code == 286  # none starting: the page stops polling
        row = re.search(r'<tr class="server-row"><td>static t=0.1</td>.*?</tr>',
                        response.content.decode(), re.S).group(0)  # fmt: skip
        assert "<td class=\"server-status\">running</td>" in row and server.url in row
        assert "Stop" in row
        client = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["static t=0.1"]
        reply = client.chat.completions.create(
            model="static t=0.1", messages=[{"role": "user", "content": "w1 w2"}], max_tokens=2
        )
        assert reply.usage.completion_tokens <= 2
        assert reply.model_extra["telemetry"]["policy"]["kind"] == "static"
        # A second start returns the running one; a restarted web process reads the row.
        services.condition_server_start(condition=static)
        assert ConditionServer.objects.filter(condition=static).count() == 1
        assert services.server_status(ConditionServer.objects.get(id=server.id)) == "running"
        response = staff.post(reverse("condition_server_stop", args=[study.id, server.id]))
        assert response.status_code == 302
        assert gone(server.pid)
        server.refresh_from_db()
        assert server.stopped_at is not None and services.server_status(server) == "stopped"
        page = staff.get(reverse("study_detail", args=[study.id])).content.decode()
        assert server.url not in page
    finally:
        services.condition_server_stop(server=server)


def test_a_server_that_died_is_shown_with_its_log_and_replaced(users, settings, tmp_path):
    study = make_study(conditions=TWO)
    dense = study.conditions.get(name="dense")
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = ConditionServer.objects.create(
        condition=dense, port=9, pid=finished.pid, model_name="dense"
    )
    log = services.servers.server_log_path(dead)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("RuntimeError: out of memory")
    page = staff_client(users).get(reverse("study_detail", args=[study.id])).content.decode()
    assert "exited" in page and "RuntimeError: out of memory" in page
    settings.MODEL_PATH = str(tmp_path / "missing")  # it dies again, but is a new row
    new = services.condition_server_start(condition=dense)
    try:
        dead.refresh_from_db()
        assert dead.stopped_at is not None and new.id != dead.id
    finally:
        services.condition_server_stop(server=new)


def test_a_running_server_is_the_pilot_forms_first_endpoint(users):
    study = make_study(conditions=TWO)
    finish_generations(study)  # pairs to pilot
    server = ConditionServer.objects.create(
        condition=study.conditions.get(name="dense"), port=40001, pid=1, model_name="dense"
    )
    setup = staff_client(users).get(reverse("study_setup", args=[study.id])).content.decode()
    assert f'value="{server.url}"' in setup and 'value="dense"' in setup


def test_a_condition_waiting_for_calibration_cannot_be_served(users):
    study = make_study(conditions=[("dense", {"kind": "dense"}), ("cal", {"kind": "static"})])
    waiting = study.conditions.get(name="cal")
    response = staff_client(users).post(
        reverse("condition_server_start", args=[study.id, waiting.id])
    )
    assert response.status_code == 409 and b"waits for its calibration" in response.content
    assert not ConditionServer.objects.exists()


def test_only_staff_and_only_through_the_conditions_own_study(users):
    study = make_study(conditions=TWO)
    other = make_study(conditions=TWO, name="other")
    condition = study.conditions.first()
    staff = staff_client(users)
    assert staff.post(
        reverse("condition_server_start", args=[other.id, condition.id])
    ).status_code == 404
    server = ConditionServer.objects.create(condition=condition, port=9, pid=1, model_name="x")
    assert staff.post(
        reverse("condition_server_stop", args=[other.id, server.id])
    ).status_code == 404
    rater = Client()
    rater.force_login(users[1])
    for response in (
        rater.post(reverse("condition_server_start", args=[study.id, condition.id])),
        rater.post(reverse("condition_server_stop", args=[study.id, server.id])),
        rater.get(reverse("study_servers", args=[study.id])),
    ):
        assert response.status_code == 302 and "/login" in response["Location"]
    server.refresh_from_db()
    assert server.stopped_at is None  # pid 1 is not a server of ours: never signalled
    assert services.server_status(server) == "exited"
