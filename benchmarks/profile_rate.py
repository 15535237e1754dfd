"""Where the rate page's time goes: one rater's next-pair GET and submit POST, in-process.

    .venv/bin/python -m benchmarks.profile_rate [--pairs 300] [--repeat 60] [--profile]
        [--database-url postgres://postgres@127.0.0.1:5432/loadbench_profile]

Builds the study `benchmarks.load_raters` builds (PostgreSQL `loadbench*` database, dropped
and recreated; Redis cache), logs one rater in through Django's test client and alternates
GET rate page / POST the judgment form, as the load benchmark's raters do, without HTTP,
gunicorn or a load client in the measurement. Prints per request kind: wall p50/p95 ms,
queries per request, time inside SQL, and with --profile the functions that took the most
cumulative time. Use it to see what a change to the rate page costs; compare variants in one
run (`--repeat`), since this machine's timings drift by a quarter between runs.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import random
import statistics
import sys
import time

from benchmarks import load_raters


def _ms(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=20, method="inclusive")
    return f"p50 {statistics.median(samples) * 1000:.1f} / p95 {cuts[18] * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--queries", action="store_true",
                        help="print the last next-pair request's SQL with times")
    parser.add_argument("--database-url",
                        default="postgres://postgres@127.0.0.1:5432/loadbench_profile")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    args = parser.parse_args(argv)

    env = load_raters.production_env(args.database_url, args.redis_url,
                                     load_raters.ROOT / "var" / "loadbench-profile")
    env["ALLOWED_HOSTS"] = "testserver"
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    load_raters.database_recreate(args.database_url)
    import django
    from django.core.management import call_command
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    raters = load_raters.raters_create(4, prefix="profile-rater")
    study = load_raters.study_create(name="profile", n_pairs=args.pairs, overlap=1,
                                     raters=raters)
    # As webapp/wsgi.py does in a served process: what setup made is not the pages' garbage.
    gc.collect()
    gc.freeze()
    client = Client()
    assert client.login(username=raters[0].username, password=load_raters.RATER_PASSWORD)
    rng = random.Random(0)
    rate_url = f"/studies/{study.id}/rate/"
    timings: dict[str, list[float]] = {"next pair": [], "submit": []}
    queries: dict[str, list[int]] = {"next pair": [], "submit": []}
    sql_ms: dict[str, list[float]] = {"next pair": [], "submit": []}
    profiler = cProfile.Profile() if args.profile else None
    last_sql: dict[str, list[dict]] = {}

    def timed(kind: str, call, *args, **kwargs):
        with CaptureQueriesContext(connection) as captured:
            if profiler:
                profiler.enable()
            start = time.perf_counter()
            response = call(*args, **kwargs)
            timings[kind].append(time.perf_counter() - start)
            if profiler:
                profiler.disable()
        queries[kind].append(len(captured.captured_queries))
        sql_ms[kind].append(sum(float(q["time"]) for q in captured.captured_queries) * 1000)
        last_sql[kind] = captured.captured_queries
        reset_queries()
        return response

    for i in range(args.repeat + 5):
        if i == 5:  # the first few warm caches and compile templates: not counted
            for store in (*timings.values(), *queries.values(), *sql_ms.values()):
                store.clear()
            if profiler:
                profiler = cProfile.Profile()
        page = timed("next pair", client.get, rate_url)
        form = load_raters._form_fields(page.content.decode(), rng)
        if form is None:
            print("the study ran out of pairs; raise --pairs", file=sys.stderr)
            return 1
        action, _, fields = form
        response = timed("submit", client.post, action, data=fields)
        if response.status_code != 302:
            print(f"submit answered {response.status_code}", file=sys.stderr)
            return 1

    for kind in timings:
        print(f"{kind:9}: {_ms(timings[kind])}, {statistics.mean(queries[kind]):.1f} queries, "
              f"SQL {statistics.median(sql_ms[kind]):.1f} ms (median)")
    if args.queries:
        for kind, captured in last_sql.items():
            print(f"\n{kind}:")
            for q in captured:
                print(f"  {float(q['time']) * 1000:5.1f} ms  {q['sql'][:300]}")
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(
            os.environ.get("PROFILE_FILTER", ""), 45)
        if os.environ.get("PROFILE_CALLEES"):
            stats.print_callees(os.environ["PROFILE_CALLEES"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
