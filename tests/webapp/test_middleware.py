"""A database or broker outage is a clear 503 page; any other error stays an error."""

import pytest
from django.db import IntegrityError, InterfaceError, OperationalError
from django.http import HttpResponse
from django.test import RequestFactory
from kombu.exceptions import OperationalError as BrokerOperationalError

from webapp.middleware import ServiceUnavailableMiddleware

middleware = ServiceUnavailableMiddleware(lambda request: HttpResponse())


@pytest.mark.parametrize("error", [OperationalError("server closed the connection"),
                                   InterfaceError("connection already closed")])
def test_a_database_outage_is_a_503_that_says_judgments_are_safe(error):
    request = RequestFactory().get("/studies/1/rate/?x=1")
    response = middleware.process_exception(request, error)
    assert response.status_code == 503 and response["Retry-After"] == "10"
    html = response.content.decode()
    assert "The database is unavailable" in html
    assert "Your submitted judgments are safe" in html
    assert 'href="/studies/1/rate/?x=1"' in html, "a GET is retried where it was"
    assert "HX-Refresh" not in response


def test_a_broker_outage_is_a_503_that_says_the_rows_wait():
    request = RequestFactory().post("/staff/studies/1/generate/")
    response = middleware.process_exception(request, BrokerOperationalError("refused"))
    assert response.status_code == 503
    html = response.content.decode()
    assert "The task queue is unavailable" in html and "stay <em>pending</em>" in html
    assert 'href="/"' in html, "a POST is not retried by a link"


def test_a_cache_outage_is_a_503():
    from redis.exceptions import ConnectionError as RedisConnectionError

    request = RequestFactory().post("/login/")
    response = middleware.process_exception(request, RedisConnectionError("refused"))
    assert response.status_code == 503
    assert "Logging in is unavailable for a moment" in response.content.decode()


def test_htmx_requests_are_told_to_refresh_so_the_page_shows():
    request = RequestFactory().post("/assignments/1/judge/", HTTP_HX_REQUEST="true")
    response = middleware.process_exception(request, OperationalError("down"))
    assert response.status_code == 503 and response["HX-Refresh"] == "true"


def test_other_errors_are_left_alone():
    request = RequestFactory().get("/")
    assert middleware.process_exception(request, IntegrityError("duplicate key")) is None
    assert middleware.process_exception(request, ValueError("bug")) is None


@pytest.mark.django_db
def test_every_page_has_a_content_security_policy_without_inline_script(client):
    response = client.get("/login/")
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'" and policy["default-src"] == "'self'"
    assert "unsafe-inline" not in response["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'"
    html = response.content.decode()
    assert "<script>" not in html and " style=" not in html, "nothing inline to allow"
