"""Settings come from the environment, fail clearly on bad values, and deploy safely."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.settings import envbool, envint

ROOT = Path(__file__).resolve().parents[2]


def test_env_helpers_reject_bad_values(monkeypatch):
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG='maybe' is not a boolean"):
        envbool("X_FLAG", False)
    monkeypatch.setenv("X_NUM", "ten")
    with pytest.raises(ImproperlyConfigured, match="X_NUM='ten' is not an integer"):
        envint("X_NUM", 1)
    monkeypatch.setenv("X_FLAG", "off")
    assert envbool("X_FLAG", True) is False


def _manage(args: list[str], env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    # A deployment's environment: none of the test run's own switches.
    dropped = ("SECRET_KEY", "DEBUG", "DJANGO_ALLOW_ASYNC_UNSAFE")
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env={**base, "VAR_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=120,
    )


def test_production_settings_pass_check_deploy(tmp_path):
    env = {"DEBUG": "false", "SECRET_KEY": "x" * 20 + "-Kq9#vL2!pZ7@rT4$wY8%nB3^mD6&hJ1",
           "ALLOWED_HOSTS": "study.example.org"}
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = _manage(["check"], {"DEBUG": "false"}, tmp_path)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is false" in result.stderr


def _settings(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    """Import the settings module alone under `env` and print the security-relevant values
    as JSON (no app loading: a fraction of a second)."""
    dropped = ("SECRET_KEY", "DEBUG", "CACHE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    base = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("LOGIN_")}
    script = (
        "import json, webapp.settings as s; print(json.dumps({name: getattr(s, name) for name in "
        f"{SECURITY_SETTINGS!r}}}, default=str))"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env={**base, "VAR_DIR": str(tmp_path), **env},
        capture_output=True, text=True, timeout=60,
    )


SECURITY_SETTINGS = (
    "DEBUG", "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_HTTPONLY", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS",
    "SECURE_CONTENT_TYPE_NOSNIFF", "SECURE_REFERRER_POLICY", "X_FRAME_OPTIONS", "CACHES",
    "LOGIN_MAX_FAILURES", "LOGIN_MAX_FAILURES_PER_IP", "LOGIN_LOCKOUT_S",
    "DATA_UPLOAD_MAX_MEMORY_SIZE",
)
PRODUCTION = {"DEBUG": "false", "SECRET_KEY": "x" * 20 + "-Kq9#vL2!pZ7@rT4$wY8%nB3^mD6&hJ1",
              "ALLOWED_HOSTS": "study.example.org"}


def test_production_cookies_are_secure_and_headers_strict(tmp_path):
    result = _settings(PRODUCTION, tmp_path)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    expected = {
        "DEBUG": False, "SESSION_COOKIE_SECURE": True, "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_SECURE": True, "CSRF_COOKIE_HTTPONLY": True, "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000, "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin", "X_FRAME_OPTIONS": "DENY",
        "LOGIN_MAX_FAILURES": 5, "LOGIN_MAX_FAILURES_PER_IP": 20, "LOGIN_LOCKOUT_S": 900,
    }
    wrong = {k: values[k] for k, v in expected.items() if values[k] != v}
    assert not wrong, f"production settings differ from {expected}: {wrong}"
    cache = values["CACHES"]["default"]
    assert cache["BACKEND"].endswith("FileBasedCache")
    assert cache["LOCATION"] == str(tmp_path / "cache"), "the cache is not shared via VAR_DIR"


def test_cache_url_selects_redis_and_bad_values_fail_clearly(tmp_path):
    result = _settings({"CACHE_URL": "redis://127.0.0.1:6379/3"}, tmp_path)
    cache = json.loads(result.stdout)["CACHES"]["default"]
    assert cache == {"BACKEND": "webapp.cache.RedisCache",
                     "LOCATION": "redis://127.0.0.1:6379/3"}
    for env, message in (
        ({"CACHE_URL": "memcached://127.0.0.1:11211"}, "is not a redis:// URL"),
        ({"LOGIN_MAX_FAILURES": "0"}, "must be 1 or more"),
        ({"LOGIN_LOCKOUT_S": "soon"}, "LOGIN_LOCKOUT_S='soon' is not an integer"),
        # A worker must not start quietly on the wrong device.
        ({"MODEL_HOT_DEVICE": "cuda"}, "MODEL_HOT_DEVICE / MODEL_COLD_DEVICE need MODEL_PLAN"),
        ({"MODEL_PLAN": "p.json", "MODEL_DEVICE": "cuda"},
         "a hot/cold split (MODEL_PLAN) places the model itself"),
    ):
        result = _settings(env, tmp_path)
        assert result.returncode != 0 and message in result.stderr, (env, result.stderr[-500:])


@pytest.mark.django_db
def test_responses_carry_the_security_headers_and_httponly_cookies(client, django_user_model):
    page = client.get("/login/")
    headers = {name: page.headers.get(name) for name in (
        "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy",
        "Cross-Origin-Opener-Policy")}
    assert headers == {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                       "Referrer-Policy": "same-origin",
                       "Cross-Origin-Opener-Policy": "same-origin"}
    assert page.cookies["csrftoken"]["httponly"], "the CSRF cookie is readable by scripts"
    django_user_model.objects.create_user("cookie-user", password="pw-cookie-123")
    client.post("/login/", {"username": "cookie-user", "password": "pw-cookie-123"})
    assert client.cookies["sessionid"]["httponly"], "the session cookie is readable by scripts"
