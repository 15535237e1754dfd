"""Answer a database or task-queue outage with a clear 503 page instead of a 500 traceback;
send every page with its Content-Security-Policy."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

log = logging.getLogger(__name__)

# Seconds a client is told to wait before retrying; a restart takes about this long.
RETRY_AFTER_S = 10


class ServiceUnavailableMiddleware:
    """Turn "cannot reach PostgreSQL / the broker / the cache" into 503 with a page that
    says so.

    Only connection failures are caught (OperationalError, InterfaceError: a server that
    is restarting, a dropped connection); a bug such as an IntegrityError stays a 500.
    Committed judgments are durable, and one whose request failed is stored whole or not
    at all (transaction.atomic; a retry stores it once), so the page can say they are
    safe. Once the database is back, `CONN_HEALTH_CHECKS` replaces the broken connection
    on the next request without a restart."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, OperationalError | InterfaceError):
            outage = "database"
        elif isinstance(exception, BrokerOperationalError):
            outage = "broker"
        elif isinstance(exception, RedisConnectionError):
            outage = "cache"  # CACHE_URL's Redis: log-in throttling
        else:
            return None
        log.error("503 for %s %s: %s unavailable: %s", request.method, request.path, outage,
                  exception)
        # Rendered without the request: the context processors would read the session,
        # i.e. the database that is down.
        retry_url = request.get_full_path() if request.method == "GET" else "/"
        html = render_to_string("503.html", {"outage": outage, "retry_url": retry_url})
        response = HttpResponse(html, status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        if request.headers.get("HX-Request"):
            # htmx never swaps a 5xx into the page, so the rater would see nothing happen;
            # a refresh shows them this page instead (htmx reads the header on any status).
            response["HX-Refresh"] = "true"
        return response


class ContentSecurityPolicyMiddleware:
    """Add `settings.CONTENT_SECURITY_POLICY` to every response: no inline script, and
    nothing loaded from elsewhere, so injected markup cannot run or phone home.

    A view may loosen one directive for its response by setting `response.csp_update`
    (e.g. the standalone report file, whose styles are inline by design)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        policy = {**settings.CONTENT_SECURITY_POLICY, **getattr(response, "csp_update", {})}
        response.headers.setdefault(
            "Content-Security-Policy", "; ".join(f"{k} {v}" for k, v in policy.items())
        )
        return response

