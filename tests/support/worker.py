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
) -> Iterator[subprocess.Popen]:
    """Run `celery worker` in its own process group; stop it (warm, then hard) on exit.

    `env` adds settings for the worker only; `beat` embeds the periodic scheduler;
    `pool="prefork"` runs one pool process, as `make run` does."""
    from webapp.celery import app

    if purge:  # messages left by an earlier run name rows that no longer exist
        app.control.purge()
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


def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str, log_path: Path,
             process: subprocess.Popen) -> None:
    """Poll until condition() is true; fail with the worker's log tail if it never is."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            break
        time.sleep(1)
    tail = log_path.read_text()[-4000:] if log_path.exists() else "(no log)"
    state = f"exited with {process.returncode}" if process.poll() is not None else "running"
    raise AssertionError(
        f"timed out after {timeout_s:.0f}s waiting for {what}; worker {state}. Log tail:\n{tail}"
    )
