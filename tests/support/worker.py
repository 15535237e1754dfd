"""Start a real Celery worker process against the test database and broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def test_database_url() -> str:
    """A DATABASE_URL naming the database the tests are using right now."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if db["ENGINE"].endswith("postgresql"):
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    raise RuntimeError(f"no worker URL for database engine {db['ENGINE']}")


@contextmanager
def celery_worker(
    log_path: Path,
    *,
    queues: str = "generation,execution",
    env: dict[str, str] | None = None,
    beat: bool = False,
    purge: bool = True,
    pool: str = "solo",
    name: str | None = None,
) -> Iterator[subprocess.Popen]:
    """Run `celery worker` in its own process group; stop it (warm, then hard) on exit.

    `queues`: those it consumes (``generation``, ``execution``, ``judge``), each purged
    first unless `purge` is false; `env` adds settings for the worker only; `beat` embeds
    the periodic scheduler; `pool="prefork"` runs one pool process, as `make run` does;
    `name`: its node name (``-n``), for two workers on one machine."""
    if purge:  # messages left by an earlier run name rows that no longer exist
        purge_queues(queues.split(","))
    worker_env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "VAR_DIR": str(settings.VAR_DIR),
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    command = [sys.executable, "-m", "celery", "-A", "webapp", "worker", "-Q", queues,
               "--pool", pool, "-l", "info", "--without-gossip", "--without-mingle"]
    if pool == "prefork":
        command += ["-c", "1"]
    if name:
        command += ["-n", name]
    if beat:
        command += ["-B", "-s", str(log_path.with_suffix(".beat-schedule"))]
    log = open(log_path, "a")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        command,
        cwd=ROOT, env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def purge_queues(names: list[str]) -> int:
    """Drop every message waiting in the named queues (`app.control.purge` empties only the
    queues the app has declared, which a routed queue such as ``judge`` may not be yet).
    Returns how many were dropped."""
    from webapp.celery import app

    dropped = 0
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for name in names:
            try:
                dropped += channel.queue_purge(name) or 0
            except connection.channel_errors:  # a queue never declared holds nothing
                pass
    return dropped


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str, log_path: Path,
             process: subprocess.Popen | None) -> None:
    """Poll until condition() is true; fail with the log's tail if it never is, or at once if
    `process` (the worker; None: no process to watch) exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(1)
    tail = log_path.read_text()[-4000:] if log_path.exists() else "(no log)"
    state = "running"
    if process is not None and process.poll() is not None:
        state = f"exited with {process.returncode}"
    raise AssertionError(
        f"timed out after {timeout_s:.0f}s waiting for {what}; worker {state}. Log tail:\n{tail}"
    )
