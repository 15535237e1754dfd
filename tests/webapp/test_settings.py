"""Settings come from the environment, fail clearly on bad values, and deploy safely."""

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
