"""A condition served as an OpenAI-compatible API from the study page (issue 31): one
``python -m inference serve`` process per condition, on a free loopback port, in a session
of its own (so a restarted web process neither kills it nor loses it: its pid is recorded
and checked), stopped by its process group."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.models import Condition, ConditionServer

STOP_WAIT_S = 10.0  # after SIGTERM, before SIGKILL (uvicorn shuts down within 5 s)


class ServerRefused(Exception):
    """A condition that cannot be served (yet), with the reason for the page."""


def server_log_path(server: ConditionServer) -> Path:
    """Where the server's output goes: ``VAR_DIR/servers/<condition id>-<port>.log``."""
    return _log_path(server.condition_id, server.port)


def _log_path(condition_id: int, port: int) -> Path:
    return Path(settings.VAR_DIR) / "servers" / f"{condition_id}-{port}.log"


def server_log_tail(server: ConditionServer, *, chars: int = 2000) -> str:
    """The end of the server's output (why it exited, if it did)."""
    try:
        return server_log_path(server).read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def server_alive(server: ConditionServer) -> bool:
    """Whether the recorded pid is still our server: the process exists and its command
    line is `python -m inference serve` on the recorded port (a pid the system reused for
    another program, or an exited server left as a zombie, is not)."""
    try:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"serve" in cmdline and b"inference" in cmdline and str(server.port).encode() in cmdline


def server_listening(server: ConditionServer) -> bool:
    """Whether the server accepts connections yet (it loads the model first)."""
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
            return True
    except OSError:
        return False


def server_status(server: ConditionServer) -> str:
    """``running`` (listening), ``starting`` (alive, loading the model), ``exited`` (died
    without being stopped: the log says why) or ``stopped``."""
    if server.stopped_at is not None:
        return "stopped"
    if not server_alive(server):
        return "exited"
    return "running" if server_listening(server) else "starting"


def _free_port() -> int:
    """A port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def condition_server_start(*, condition: Condition) -> ConditionServer:
    """Serve ``condition`` on a free loopback port (a running server of it is returned as
    it is; one found dead is marked stopped first). The model is the condition's registered
    one, else the deployment's (``MODEL_PATH``, empty: the shipped one), on
    ``MODEL_DEVICE``. Raises `ServerRefused`
    for a condition still waiting for its calibration's thresholds or one on a merged
    (alignment-vector) model."""
    if condition.engine_policy is None:
        raise ServerRefused(
            f"{condition.name} waits for its calibration: it has no thresholds to serve yet"
        )
    if condition.aligned_model_id is not None:
        raise ServerRefused(
            f"{condition.name} runs a merged model (an alignment vector), which the page "
            "cannot serve yet"
        )
    current = ConditionServer.objects.filter(condition=condition, stopped_at__isnull=True).first()
    if current is not None:
        if server_alive(current):
            return current
        _mark_stopped(current)
    port = _free_port()
    log_path = _log_path(condition.id, port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "inference", "serve", "--policy", json.dumps(condition.policy),
        "--name", condition.name, "--host", "127.0.0.1", "--port", str(port),
        "--device", settings.MODEL_DEVICE, "--cache-dir", str(settings.MODEL_CACHE_DIR),
        "--dtype", settings.MODEL_DTYPE, "--log-level", "warning",
    ]  # fmt: skip
    # The condition's registered model, else the deployment's (MODEL_PATH; empty: shipped).
    model_path = condition.model.path if condition.model_id else settings.MODEL_PATH
    if model_path:
        command += ["--model", model_path]
    # Loopback needs no key; an INFERENCE_API_KEY in the web's environment is not passed on,
    # so the page's URL works as shown.
    env = {k: v for k, v in os.environ.items() if k != "INFERENCE_API_KEY"}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
    try:
        with transaction.atomic():
            return ConditionServer.objects.create(
                condition=condition, port=port, pid=process.pid, model_name=condition.name
            )
    except IntegrityError:  # another request started one meanwhile: keep that one
        _terminate(process.pid)
        process.wait()
        return ConditionServer.objects.get(condition=condition, stopped_at__isnull=True)


def condition_server_stop(*, server: ConditionServer) -> None:
    """Stop the server's process group (SIGTERM, then SIGKILL after `STOP_WAIT_S`) if it
    is still ours, and record it stopped. Safe to repeat."""
    if server.stopped_at is None and server_alive(server):
        _terminate(server.pid)
        deadline = time.monotonic() + STOP_WAIT_S
        while server_alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        if server_alive(server):
            _kill(server.pid, signal.SIGKILL)
    _reap(server.pid)
    _mark_stopped(server)


def _terminate(pid: int) -> None:
    _kill(pid, signal.SIGTERM)


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # its own session: the group is the pid
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    """Collect the exit status if this process started the server (else it is not ours to
    wait for: a web process started before a restart did)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _mark_stopped(server: ConditionServer) -> None:
    ConditionServer.objects.filter(id=server.id, stopped_at__isnull=True).update(
        stopped_at=timezone.now()
    )
    server.refresh_from_db()
