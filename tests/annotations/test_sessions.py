"""Sessions in Redis (with CACHE_URL): a query less per request, and a Redis outage or
restart neither logs anyone out nor fails their pages (annotations/sessions.py)."""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support.servers import private_redis


def _session_queries(captured) -> int:
    return sum('"django_session"' in q["sql"] for q in captured.captured_queries)


@pytest.mark.django_db
def test_sessions_are_read_from_redis_and_survive_its_restart(tmp_path):
    user = get_user_model().objects.create_user("session-rater", password="pw-3f9a-long")
    with private_redis(tmp_path) as redis, override_settings(
        SESSION_ENGINE="annotations.sessions",
        CACHES={
            "default": {"BACKEND": "webapp.cache.RedisCache",
                        "LOCATION": redis.url},
            "html": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        },
    ):
        client = Client()
        client.force_login(user)
        home = reverse("home")
        with CaptureQueriesContext(connection) as captured:
            assert client.get(home).status_code == 200
        assert _session_queries(captured) == 0, "the session should come from Redis"

        redis.kill()
        with CaptureQueriesContext(connection) as captured:
            response = client.get(home)
        assert response.status_code == 200, "a Redis outage must not fail a page"
        assert response.wsgi_request.user == user, "nor log the rater out"
        assert _session_queries(captured) == 1, "read from the database instead"

        redis.start()  # empty: no persistence, like a crashed server
        assert client.get(home).wsgi_request.user == user
        with CaptureQueriesContext(connection) as captured:
            assert client.get(home).wsgi_request.user == user
        assert _session_queries(captured) == 0, "cached again after the restart"

        redis.kill()
        with pytest.raises(RedisConnectionError):
            # Logging out must not leave a cached copy that outlives the session.
            client.logout()
