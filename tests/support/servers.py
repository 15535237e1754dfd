"""Private Redis and PostgreSQL servers that a test may kill and restart.

The machine's own services are shared with other test runs and must never be stopped;
these run on a free port, in a temporary folder, and are always torn down."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/local/bin"), Path("/usr/bin")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, port), 1).close()
        return True
    except OSError:
        return False


def _wait(condition, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


class PrivateRedis:
    """`redis-server` without persistence: a restart loses every message, like a crash."""

    def __init__(self, binary: str, port: int, log_path: Path) -> None:
        self.binary, self.port, self.log_path = binary, port, log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.log_path, "a")  # noqa: SIM115 - the child holds it
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        _wait(lambda: answers(self.port), timeout_s=20, what=f"redis on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: the server dies the way a crashed one does."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        _wait(lambda: not answers(self.port), timeout_s=10, what="redis to stop")


@contextmanager
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A started Redis on a free port; killed on exit whatever happened."""
    import pytest

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = PrivateRedis(binary, free_port(), tmp_path / "redis.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _postgres_bin(name: str) -> str | None:
    for folder in POSTGRES_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


class PrivateCluster:
    """A throw-away PostgreSQL cluster (initdb) on a free port, trust auth, user postgres."""

    def __init__(self, root: Path, port: int, as_postgres: list[str]) -> None:
        self.root, self.port, self.as_postgres = root, port, as_postgres
        self.data = root / "data"
        self.pg_ctl = _postgres_bin("pg_ctl")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_postgres, self.pg_ctl, "-D", str(self.data), *args],
            check=True, capture_output=True, timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "-l", str(self.root / "postgres.log"), "-w", "start")

    def stop(self, mode: str = "immediate") -> None:
        """`immediate` aborts every backend without a clean shutdown, like a crash."""
        self._pg_ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')


@contextmanager
def private_postgres() -> Iterator[PrivateCluster]:
    """A started private cluster; stopped and deleted on exit whatever happened.

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user
    (`runuser`), in a folder that user owns."""
    import pytest

    initdb = _postgres_bin("initdb")
    if initdb is None or _postgres_bin("pg_ctl") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    as_postgres: list[str] = []
    owner = None
    if os.geteuid() == 0:
        import pwd

        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if runuser is None or owner is None:
            pytest.skip("running as root without a `postgres` user to run PostgreSQL as")
        as_postgres = [runuser, "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="pg-private-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    root.chmod(0o700)
    cluster = PrivateCluster(root, free_port(), as_postgres)
    try:
        subprocess.run(
            [*as_postgres, initdb, "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8"],
            check=True, capture_output=True, timeout=120,
        )
        cluster.start()
        yield cluster
    finally:
        if cluster.running():
            try:
                cluster.stop("immediate")
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def default_database(url: str) -> Iterator[None]:
    """Point this thread's `default` database connection at `url` for a while.

    For a test that runs the app against a private cluster while the test run's own
    database stays configured; wrap it in pytest-django's `django_db_blocker.unblock()`.
    Persistent connections with health checks, as in production."""
    import dj_database_url
    from django.db import connections
    from django.db.utils import ConnectionHandler, load_backend

    parsed = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    settings_dict = ConnectionHandler({"default": parsed}).settings["default"]
    saved = connections["default"]
    connections["default"] = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(
        settings_dict, "default"
    )
    try:
        yield
    finally:
        connections["default"].close()
        connections["default"] = saved


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Send this process's Celery messages (the producer side) to `url` for a while.

    The environment variable wins over the app's setting in Celery, so both change; the
    cached connection pools are dropped so that the next message opens a new one."""
    from kombu import pools

    from webapp.celery import app

    def repoint(broker_url: str | None, env_url: str | None, transport: str | None) -> None:
        # kombu keeps one pool per broker URL in a process-wide registry: closing only the
        # app's pool would leave that closed pool to be handed back for the same URL later.
        pools.reset()
        app._pool = None
        app.amqp._producer_pool = None
        app.conf.broker_url = broker_url
        # The default broker names its own transport (webapp.broker), which would otherwise
        # take the new URL's messages.
        app.conf.broker_transport = transport
        if env_url is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = env_url

    saved = (app.conf.broker_url, os.environ.get("CELERY_BROKER_URL"), app.conf.broker_transport)
    repoint(url, url, None)
    try:
        yield
    finally:
        repoint(*saved)
