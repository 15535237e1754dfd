"""Load: N concurrent raters against the app served as in production (issue 8).

    .venv/bin/python -m benchmarks.load_raters [--raters 10,50,100] [--judgments-per-rater 15]
        [--think-ms 2000] [--workers 2*cores] [--flow form|htmx]
        [--database-url postgres://postgres@127.0.0.1:5432/loadbench]
        [--baseline GIT_REF [--rounds 3]] [--server-times]

Serves the app with gunicorn (DEBUG off, a production-like environment) against a
dedicated PostgreSQL database that it drops, creates and migrates (its name must start
with `loadbench`; 127.0.0.1 only), with Redis as broker / cache. For each rater count it
creates a study (3 conditions, 2 Likert criteria, overlap 3, generations inserted as rows
with code text, no model) whose pairs × overlap equal raters × judgments-per-rater, then
runs that many simulated raters in one asyncio process: each logs in through the login
form (CSRF), loads the rate page, thinks, and posts the judgment form exactly as the page
renders it (choice, rationale, time on task, both Likert values per criterion), until the
study tells it that it is done. `--flow htmx` posts as htmx does instead (the answer
carries the next pair). Think time is uniform in [0.5, 1.5] × --think-ms, far quicker than
a real rater reading two code outputs (raters also arrive spread over one think time);
--think-ms 0 measures saturation.

Prints a markdown table (judgments/s, p50/p95/p99 of next-pair and submit, errors) and
then checks the database of every run: one judgment per completed assignment, none
twice per (rater, pair), each pair judged by exactly the study's overlap of distinct
raters, no assignment left open, and the judgments the clients saw accepted are exactly
those stored. Exits non-zero when a check fails or a request errored. Bounded: at most
raters × judgments-per-rater judgments per round and --max-seconds per round.

`--baseline REF` serves that commit too (a git worktree under var/loadbench, same database,
Redis and settings; its migrations must be this checkout's) and runs the rounds of each
rater count alternately against both, first one then the other, so that the machine's
drift (a quarter between runs on these VMs) hits both alike; it prints both tables and the
ratio of this checkout's percentiles to the baseline's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
CONDITIONS = [
    ("dense", {"kind": "dense"}),
    ("static t=0.05", {"kind": "static", "threshold": 0.05}),
    ("dynamic t=0.05", {"kind": "dynamic", "threshold": 0.05, "entropy_scale": 1.0}),
]
CRITERIA = [
    ("correctness", "How correct is this response?"),
    ("readability", "How readable is this code?"),
]
CHOICES = ["left", "right", "tie", "both_bad"]
RATER_PASSWORD = "load-rater-password-9f3c"  # noqa: S105 - a throw-away benchmark database
REQUEST_TIMEOUT_S = 30.0
MAX_ERRORS_PER_RATER = 5

_JUDGE_ACTION = re.compile(r'action="(/assignments/(\d+)/judge/)"')
_CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
_LIKERT_FIELD = re.compile(r'name="(c\d+_(?:left|right))" value="(\d+)"')


# --- The study (Django ORM; the caller has configured Django) ---------------------------


def _output_text(item: int, condition: int) -> str:
    """A plausible ~25-line code answer, different per item and condition."""
    body = "\n".join(
        f"        if numbers[i] - numbers[j] < threshold * {c + 1}:  # check {item}.{c}"
        for c in range(8 + 4 * condition)
    )
    return (
        f"```python\nfrom typing import List\n\n\ndef task_{item}(numbers: List[float], "
        f"threshold: float) -> bool:\n"
        f"    \"\"\"Solution for item {item}, style {condition}.\"\"\"\n"
        f"    for i in range(len(numbers)):\n      for j in range(i + 1, len(numbers)):\n"
        f"{body}\n            return True\n    return False\n```\n"
        f"This checks every pair once ({'fast' if condition else 'plain'} version)."
    )


def raters_create(n: int, *, prefix: str = "load-rater") -> list:
    """n rater accounts sharing RATER_PASSWORD (hashed once: hashing is deliberately slow)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password

    User = get_user_model()
    password = make_password(RATER_PASSWORD)
    User.objects.bulk_create(
        [User(username=f"{prefix}-{i}", password=password) for i in range(n)],
        ignore_conflicts=True,
    )
    return list(User.objects.filter(username__startswith=f"{prefix}-").order_by("id")[:n])


def study_create(*, name: str, n_pairs: int, overlap: int, raters: list):
    """An open study of at least n_pairs pairs (3 per item), finished generations as rows."""
    from django.db import connection

    from annotations import services
    from annotations.models import Condition, Criterion, Generation, Item, Study

    study = Study.objects.create(
        name=name, status=Study.Status.OPEN, overlap=overlap,
        instructions="Pick the response that solves the task better.",
    )
    conditions = Condition.objects.bulk_create(
        Condition(study=study, name=cname, policy=policy, position=position)
        for position, (cname, policy) in enumerate(CONDITIONS)
    )
    Criterion.objects.bulk_create(
        Criterion(study=study, name=cname, question=question, position=position)
        for position, (cname, question) in enumerate(CRITERIA)
    )
    n_items = -(-n_pairs // 3)
    items = Item.objects.bulk_create(
        Item(study=study, dataset="load", task_id=f"load/{i}",
             prompt=f"Write task_{i}(numbers, threshold): is any pair closer than threshold?")
        for i in range(n_items)
    )
    Generation.objects.bulk_create(
        Generation(item=item, condition=condition, status=Generation.Status.DONE,
                   text=_output_text(i, c), attempts=1, active_fraction=1.0)
        for i, item in enumerate(items)
        for c, condition in enumerate(conditions)
    )
    for item in items:
        services.pairs_create(item=item)
    study.raters.add(*raters)
    # Fresh planner statistics, as a database that has been running a while would have.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return study


def study_verify(study, *, accepted: dict[str, set[int]]) -> list[str]:
    """What is wrong with the study's judgments after a run ([] = nothing).

    `accepted` maps a username to the assignment ids whose submit the client saw succeed."""
    from django.db.models import Count

    from annotations.models import Assignment, Judgment, Pair

    problems = []
    assignments = Assignment.objects.filter(pair__study=study)
    completed_without = assignments.filter(completed_at__isnull=False, judgment__isnull=True)
    if n := completed_without.count():
        problems.append(f"{n} completed assignments have no judgment")
    judged_not_completed = assignments.filter(judgment__isnull=False, completed_at__isnull=True)
    if n := judged_not_completed.count():
        problems.append(f"{n} judgments belong to assignments not marked completed")
    twice = (
        Judgment.objects.filter(assignment__pair__study=study)
        .values("assignment__rater_id", "assignment__pair_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    if n := twice.count():
        problems.append(f"{n} (rater, pair) combinations were judged more than once")
    open_ = assignments.filter(judgment__isnull=True, released_at__isnull=True)
    if n := open_.count():
        problems.append(f"{n} assignments were left open (leased, never judged)")
    per_pair = Pair.objects.filter(study=study).annotate(
        raters=Count("assignments__rater", filter=_judged(), distinct=True)
    )
    wrong = [(p.id, p.raters) for p in per_pair if p.raters != study.overlap]
    if wrong:
        above = sum(1 for _, n in wrong if n > study.overlap)
        problems.append(
            f"{len(wrong)} pairs not judged by exactly {study.overlap} raters "
            f"({above} above); first: {wrong[:5]}"
        )
    stored: dict[str, set[int]] = {}
    for username, assignment_id in Judgment.objects.filter(
        assignment__pair__study=study
    ).values_list("assignment__rater__username", "assignment_id"):
        stored.setdefault(username, set()).add(assignment_id)
    for username in sorted(set(stored) | set(accepted)):
        if stored.get(username, set()) != accepted.get(username, set()):
            problems.append(
                f"{username}: the client saw {len(accepted.get(username, ()))} judgments "
                f"accepted, the database holds {len(stored.get(username, ()))}"
            )
    return problems


def _judged():
    from django.db.models import Q

    return Q(assignments__judgment__isnull=False)


# --- The simulated raters (HTTP only) ---------------------------------------------------


@dataclass
class RaterRun:
    """What one simulated rater did and saw."""

    username: str
    next_pair_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    accepted: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    finished: bool = False


def _form_fields(html: str, rng: random.Random) -> tuple[str, int, dict[str, str]] | None:
    """The judgment form on a rate page or fragment: (action, assignment id, fields)."""
    action = _JUDGE_ACTION.search(html)
    csrf = _CSRF_FIELD.search(html)
    if action is None or csrf is None:
        return None
    fields = {
        "csrfmiddlewaretoken": csrf.group(1),
        "time_on_task_ms": "",
        "rationale": rng.choice(["", "", "Left handles the empty list.", "Both loop twice."]),
        "choice": rng.choice(CHOICES),
    }
    scale: dict[str, list[str]] = {}
    for name, value in _LIKERT_FIELD.findall(html):
        scale.setdefault(name, []).append(value)
    fields.update({name: rng.choice(values) for name, values in scale.items()})
    return action.group(1), int(action.group(2)), fields


async def rater_log_in(client: httpx.AsyncClient, username: str, password: str) -> None:
    """The login form, as a browser fills it: GET for the CSRF token, then POST."""
    page = await client.get("/login/")
    page.raise_for_status()
    token = _CSRF_FIELD.search(page.text)
    if token is None:
        raise RuntimeError("the login page has no CSRF token")
    response = await client.post(
        "/login/",
        data={"csrfmiddlewaretoken": token.group(1), "username": username,
              "password": password, "next": ""},
        headers={"Referer": str(client.base_url) + "/login/"},
    )
    if response.status_code != 302 or "sessionid" not in client.cookies:
        raise RuntimeError(f"login of {username} failed: HTTP {response.status_code}")


async def _timed(samples: list[float], request) -> httpx.Response:
    start = time.perf_counter()
    response = await request
    samples.append(time.perf_counter() - start)
    return response


async def rater_rate(
    client: httpx.AsyncClient, run: RaterRun, *, study_id: int, think_s: float,
    rng: random.Random, deadline: float, flow: str = "form",
) -> RaterRun:
    """Judge pairs until the study says this rater is done (or the deadline passes).

    form: GET the rate page (next pair), POST the form (submit), follow nothing.
    htmx: GET the page once, then POST as htmx does; each answer is the next pair."""
    rate_url = f"/studies/{study_id}/rate/"
    html = None
    # Raters arrive spread over one think time, not all in the same millisecond.
    await asyncio.sleep(rng.uniform(0, think_s))
    while time.monotonic() < deadline and len(run.errors) < MAX_ERRORS_PER_RATER:
        try:
            if html is None:
                page = await _timed(run.next_pair_s, client.get(rate_url))
                if page.status_code != 200:
                    run.errors.append(f"GET rate: HTTP {page.status_code}")
                    continue
                html = page.text
            if 'id="done"' in html:
                run.finished = True
                return run
            if 'id="waiting"' in html:  # every open pair is leased by others: poll as the page does
                await asyncio.sleep(min(think_s, 1.0))
                html = None
                continue
            form = _form_fields(html, rng)
            if form is None:
                run.errors.append("the rate page has neither a pair nor the done message")
                html = None
                continue
            action, assignment_id, fields = form
            thought = think_s * rng.uniform(0.5, 1.5)
            await asyncio.sleep(thought)
            fields["time_on_task_ms"] = str(round(thought * 1000))
            headers = {"Referer": str(client.base_url) + rate_url}
            if flow == "htmx":
                headers.update({"HX-Request": "true", "HX-Target": "pair",
                                "HX-Current-URL": str(client.base_url) + rate_url,
                                "X-CSRFToken": fields["csrfmiddlewaretoken"]})
            response = await _timed(run.submit_s, client.post(action, data=fields,
                                                              headers=headers))
            expected = 200 if flow == "htmx" else 302
            if response.status_code != expected or 'role="alert"' in response.text:
                run.errors.append(f"POST judge: HTTP {response.status_code} "
                                  f"{_alert(response.text)}")
                html = None
                continue
            run.accepted.add(assignment_id)
            html = response.text if flow == "htmx" else None
        except httpx.HTTPError as error:
            run.errors.append(f"{type(error).__name__}: {error}")
            html = None
    if not run.finished:
        run.errors.append("stopped before the study was done (deadline or errors)")
    return run


def _alert(html: str) -> str:
    match = re.search(r'role="alert">([^<]*)<', html)
    return match.group(1).strip() if match else ""


def _client(base_url: str, cookies: httpx.Cookies | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url, cookies=cookies, timeout=REQUEST_TIMEOUT_S,
        headers={"Origin": base_url, "User-Agent": "load-raters/1"},
        limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
    )


async def raters_run(
    base_url: str, usernames: list[str], *, study_id: int, think_s: float,
    max_seconds: float, seed: int = 0, flow: str = "form",
    sessions: dict[str, httpx.Cookies] | None = None,
) -> tuple[list[RaterRun], float]:
    """Log every rater in (not timed; sessions are reused when given), then let them all
    rate at once. Returns their runs and the timed phase's wall time in seconds."""
    sessions = sessions if sessions is not None else {}
    clients = {u: _client(base_url, sessions.get(u)) for u in usernames}
    try:
        login_gate = asyncio.Semaphore(8)  # password hashing is slow on purpose

        async def log_in(username: str) -> None:
            if username in sessions:
                return
            async with login_gate:
                await rater_log_in(clients[username], username, RATER_PASSWORD)
            sessions[username] = clients[username].cookies

        await asyncio.gather(*(log_in(u) for u in usernames))
        start = time.monotonic()
        runs = await asyncio.gather(*(
            rater_rate(clients[u], RaterRun(u), study_id=study_id, think_s=think_s,
                       rng=random.Random(f"{seed}-{u}"), deadline=start + max_seconds,
                       flow=flow)
            for u in usernames
        ))
        return list(runs), time.monotonic() - start
    finally:
        await asyncio.gather(*(c.aclose() for c in clients.values()))


# --- Reporting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    raters: int
    judgments: int
    wall_s: float
    next_pair_ms: tuple[float, float, float]
    submit_ms: tuple[float, float, float]
    requests: int
    errors: int

    @property
    def judgments_per_s(self) -> float:
        return self.judgments / self.wall_s if self.wall_s else 0.0


def _percentiles_ms(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        value = samples[0] * 1000 if samples else float("nan")
        return (value, value, value)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return (cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000)


def summarize(runs: list[RaterRun], wall_s: float, *, raters: int | None = None) -> Summary:
    """The runs' figures; `raters` when the runs are several rounds of that many raters."""
    next_pair = [s for r in runs for s in r.next_pair_s]
    submit = [s for r in runs for s in r.submit_s]
    return Summary(
        raters=raters or len(runs),
        judgments=sum(len(r.accepted) for r in runs),
        wall_s=wall_s,
        next_pair_ms=_percentiles_ms(next_pair),
        submit_ms=_percentiles_ms(submit),
        requests=len(next_pair) + len(submit),
        errors=sum(len(r.errors) for r in runs),
    )


def table(rows: list[Summary]) -> str:
    lines = [
        "| raters | judgments | wall s | judgments/s | next pair p50 / p95 / p99 ms "
        "| submit p50 / p95 / p99 ms | requests | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        lines.append(
            f"| {s.raters} | {s.judgments} | {s.wall_s:.1f} | {s.judgments_per_s:.1f} "
            f"| {' / '.join(f'{v:.0f}' for v in s.next_pair_ms)} "
            f"| {' / '.join(f'{v:.0f}' for v in s.submit_ms)} | {s.requests} | {s.errors} |"
        )
    return "\n".join(lines)


# --- The production-like server -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def production_env(database_url: str, redis_url: str, var_dir: Path) -> dict[str, str]:
    """DEBUG off with a real secret; plain HTTP on loopback, so the TLS-only cookie and
    redirect settings are off (a TLS proxy would sit in front in production)."""
    return {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": database_url,
        "DATABASE_CONN_MAX_AGE": "60",
        "CELERY_BROKER_URL": redis_url,
        "CACHE_URL": redis_url,
        "VAR_DIR": str(var_dir),
        "LOG_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
    }


def database_recreate(database_url: str) -> None:
    """Drop and create the benchmark database (only a loopback `loadbench*` one)."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if parts.hostname not in ("127.0.0.1", "localhost") or not name.startswith("loadbench"):
        raise SystemExit(f"refusing to recreate {database_url}: only 127.0.0.1/loadbench*")
    maintenance = parts._replace(path="/postgres").geturl()
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


# gunicorn's access log line: method, path, status, microseconds spent in the worker.
_ACCESS_FORMAT = "%(m)s %(U)s %(s)s %(D)s"


def gunicorn_start(env: dict[str, str], *, workers: int, threads: int, port: int,
                   log_path: Path, access_log: Path | None = None,
                   code: Path = ROOT) -> subprocess.Popen:
    """gunicorn serving the app whose checkout is `code` (this one, or a baseline's)."""
    command = [
        str(Path(sys.executable).parent / "gunicorn"), "webapp.wsgi",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
        "--backlog", "2048", "--log-level", "warning",
    ]
    if access_log is not None:
        command += ["--access-logfile", str(access_log), "--access-logformat", _ACCESS_FORMAT]
    log = open(log_path, "w")  # noqa: SIM115 - the child holds it
    process = subprocess.Popen(command, cwd=code, env={**os.environ, **env}, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/login/", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.3)
    process.terminate()
    raise SystemExit(f"gunicorn did not come up; log:\n{log_path.read_text()[-3000:]}")


def server_times(access_log: Path, since: int) -> tuple[list[float], list[float]]:
    """Seconds the server spent on rate-page GETs and judge POSTs, from the access log's
    lines after byte offset `since` (what the client measures, less HTTP and its own loop)."""
    next_pair, submit = [], []
    with open(access_log, "rb") as log:
        log.seek(since)
        for line in log.read().decode().splitlines():
            method, path, _, micros = line.split()
            if method == "GET" and path.endswith("/rate/"):
                next_pair.append(int(micros) / 1e6)
            elif method == "POST" and path.endswith("/judge/"):
                submit.append(int(micros) / 1e6)
    return next_pair, submit


def machine_noise(seconds: float = 10.0) -> tuple[float, float, float]:
    """p50 / p95 / p99 ms of one fixed piece of pure-Python arithmetic (~20 ms here), run
    every 10 ms for `seconds` with nothing else of ours running. Its spread is the VM's
    own (other guests taking the host's cores, "steal"), not the app's: when its p95 is far
    above its p50, so is every request's, whatever the code does."""
    def work() -> int:
        total = 0
        for i in range(200_000):
            total += i * i
        return total

    work()
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        work()
        samples.append(time.perf_counter() - start)
        time.sleep(0.01)
    return _percentiles_ms(samples)


def _load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def baseline_checkout(ref: str, var_dir: Path) -> tuple[Path, str]:
    """A detached worktree of `ref` to serve beside this checkout, and its short commit.

    Both are served on one database, so their migrations must be the same files."""
    def git(*args: str, cwd: Path = ROOT) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    commit = git("rev-parse", "--short", f"{ref}^{{commit}}")
    tree = var_dir / f"baseline-{commit}"
    if not tree.exists():
        git("worktree", "add", "--detach", str(tree), commit)
    ours = sorted(p.name for p in (ROOT / "annotations" / "migrations").glob("0*.py"))
    theirs = sorted(p.name for p in (tree / "annotations" / "migrations").glob("0*.py"))
    if ours != theirs:
        raise SystemExit(f"{ref} has other migrations than this checkout ({theirs[-1:]} vs "
                         f"{ours[-1:]}): the two cannot share the benchmark database")
    return tree, commit


@dataclass
class Served:
    """One version of the app under test: its gunicorn, address and what it measured."""

    name: str
    base_url: str
    process: subprocess.Popen
    access_log: Path
    runs: dict[int, list[RaterRun]] = field(default_factory=dict)
    wall_s: dict[int, float] = field(default_factory=dict)
    inside: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)


def served_start(name: str, env: dict[str, str], *, code: Path, var_dir: Path,
                 workers: int, threads: int) -> Served:
    var_dir.mkdir(parents=True, exist_ok=True)
    env = {**env, "VAR_DIR": str(var_dir)}
    if code != ROOT:  # its own static files, collected by its own code
        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
                       cwd=code, env={**os.environ, **env}, check=True)
    access_log = var_dir / "access.log"
    access_log.unlink(missing_ok=True)
    port = _free_port()
    process = gunicorn_start(env, workers=workers, threads=threads, port=port,
                             log_path=var_dir / "gunicorn.log", access_log=access_log,
                             code=code)
    return Served(name, f"http://127.0.0.1:{port}", process, access_log)


def _ms3(values: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.0f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raters", default="10,50,100", help="comma-separated rater counts")
    parser.add_argument("--judgments-per-rater", type=int, default=15,
                        help="per rater and round")
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--think-ms", type=float, default=2000)
    parser.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flow", choices=["form", "htmx"], default="form")
    parser.add_argument("--max-seconds", type=float, default=300)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/loadbench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--server-times", action="store_true",
                        help="also print the time spent inside the server (access log)")
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also serve this commit (a git worktree) and alternate rounds "
                             "between it and this checkout; prints both and their ratio")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per rater count (default 1, or 3 with --baseline)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.raters.split(",")]
    if min(counts) < args.overlap:
        parser.error("every rater count must be at least the overlap")
    rounds = args.rounds or (3 if args.baseline else 1)

    var_dir = ROOT / "var" / "loadbench"
    env = production_env(args.database_url, args.redis_url, var_dir)
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    print(f"# preparing {args.database_url} (drop, create, migrate, collectstatic)", flush=True)
    database_recreate(args.database_url)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    raters = raters_create(max(counts))
    versions = [("this checkout", ROOT, var_dir)]
    if args.baseline:
        tree, commit = baseline_checkout(args.baseline, var_dir)
        versions.insert(0, (f"baseline {commit}", tree, var_dir / f"serve-{commit}"))
    servers: list[Served] = []
    failures, sessions, loads = [], {}, []
    try:
        for name, code, version_dir in versions:
            servers.append(served_start(name, env, code=code, var_dir=version_dir,
                                        workers=args.workers, threads=args.threads))
        # Warm-up, not reported: every gunicorn worker imports and compiles its code paths.
        warm = raters[: max(args.overlap, args.workers)]
        for served in servers:
            study = study_create(name=f"warm-up {served.name} {time.time():.0f}",
                                 n_pairs=len(warm) * 2, overlap=args.overlap, raters=warm)
            asyncio.run(raters_run(served.base_url, [r.username for r in warm],
                                   study_id=study.id, think_s=0.05,
                                   max_seconds=args.max_seconds, sessions=sessions))
        loads.append(f"before: {_load_average()}")
        noise = [f"before {_ms3(machine_noise())}"]
        print(f"# machine noise (fixed CPU work, p50 / p95 / p99 ms): {noise[0]}", flush=True)
        for n in counts:
            for round_ in range(rounds):
                # Alternate which version goes first, so that a drift hits both alike.
                order = servers if round_ % 2 == 0 else servers[::-1]
                for served in order:
                    failures += _measure(served, n, raters[:n], args, sessions)
            loads.append(f"after {n}: {_load_average()}")
        noise.append(f"after {_ms3(machine_noise())}")
    finally:
        for served in servers:
            served.process.terminate()
            served.process.wait(timeout=30)

    print(f"\ngunicorn {args.workers} workers × {args.threads} threads, flow {args.flow}, "
          f"think {args.think_ms:.0f} ms (±50%), overlap {args.overlap}, "
          f"{args.judgments_per_rater} judgments per rater and round, {rounds} round(s); "
          f"{os.cpu_count()} cores; load average {'; '.join(loads)}; machine noise (fixed "
          f"CPU work, p50 / p95 / p99 ms) {'; '.join(noise)}\n")
    summaries = {}
    for served in servers:
        rows = [summarize(served.runs[n], served.wall_s[n], raters=n) for n in counts]
        summaries[served.name] = rows
        if len(servers) > 1:
            print(f"{served.name}:")
        print(table(rows))
        if args.server_times:
            for n in counts:
                inside = [_percentiles_ms(t) for t in served.inside[n]]
                print(f"  {n} raters, inside the server: next pair {_ms3(inside[0])}, "
                      f"submit {_ms3(inside[1])} ms")
        print()
    if len(servers) == 2:
        base, ours = summaries[servers[0].name], summaries[servers[1].name]
        print("this checkout / baseline, same run, rounds alternated:")
        for b, o in zip(base, ours, strict=True):
            ratios = [o.next_pair_ms[i] / b.next_pair_ms[i] for i in range(3)]
            submit = [o.submit_ms[i] / b.submit_ms[i] for i in range(3)]
            print(f"  {o.raters} raters: next pair p50 / p95 / p99 "
                  f"{' / '.join(f'{r:.2f}' for r in ratios)}, submit "
                  f"{' / '.join(f'{r:.2f}' for r in submit)}")
    mine = summaries[servers[-1].name]
    at_50 = [s for s in mine if s.raters == 50]
    if at_50:
        worst = max(at_50[0].next_pair_ms[1], at_50[0].submit_ms[1])
        print(f"\nGoal p95 < 50 ms at 50 raters with 0 errors: "
              f"{'met' if worst < 50 and not at_50[0].errors else 'MISSED'} "
              f"(worst p95 {worst:.0f} ms, {at_50[0].errors} errors)")
    errors = sum(s.errors for rows in summaries.values() for s in rows)
    if failures:
        print("\nDatabase checks FAILED:\n  " + "\n  ".join(failures))
    else:
        print("\nDatabase checks passed: one judgment per completed assignment, none twice "
              "per (rater, pair), every pair judged by exactly its overlap, none left open, "
              "client and database agree.")
    return 1 if failures or errors else 0


def _measure(served: Served, n: int, raters: list, args, sessions: dict) -> list[str]:
    """One round of n raters against one server: a fresh study, rated to the end; the runs
    are added to the server's record; returns what the database checks found wrong."""
    n_pairs = n * args.judgments_per_rater // args.overlap
    study = study_create(name=f"load {n} raters {served.name} {time.time():.0f}",
                         n_pairs=n_pairs, overlap=args.overlap, raters=raters)
    since = served.access_log.stat().st_size if served.access_log.exists() else 0
    runs, wall_s = asyncio.run(raters_run(
        served.base_url, [r.username for r in raters], study_id=study.id,
        think_s=args.think_ms / 1000, max_seconds=args.max_seconds, seed=args.seed,
        flow=args.flow, sessions=sessions,
    ))
    served.runs.setdefault(n, []).extend(runs)
    served.wall_s[n] = served.wall_s.get(n, 0.0) + wall_s
    summary = summarize(runs, wall_s)
    print(f"{served.name}: {table([summary]).splitlines()[-1]}  (load {_load_average()})",
          flush=True)
    time.sleep(0.5)  # gunicorn writes its access log after answering
    inside = server_times(served.access_log, since)
    previous = served.inside.get(n, ([], []))
    served.inside[n] = (previous[0] + inside[0], previous[1] + inside[1])
    if args.server_times:
        print(f"  inside the server: next pair {_ms3(_percentiles_ms(inside[0]))}, "
              f"submit {_ms3(_percentiles_ms(inside[1]))} ms", flush=True)
    for r in runs:
        for error in r.errors[:3]:
            print(f"  {r.username}: {error}")
    problems = study_verify(study, accepted={r.username: r.accepted for r in runs})
    return [f"{served.name}, {n} raters: {p}" for p in problems]


if __name__ == "__main__":
    sys.exit(main())
