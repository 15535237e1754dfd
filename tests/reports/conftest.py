"""Fixtures of the report tests: the study fixtures of `tests/annotations` and a report cache
of each test's own."""

import pytest

from tests.annotations.conftest import users  # noqa: F401  (a fixture, used by name)


@pytest.fixture(autouse=True)
def report_cache(settings, tmp_path_factory):
    """Each test its own report cache (VAR_DIR/reports)."""
    settings.VAR_DIR = tmp_path_factory.mktemp("var")
    return settings.VAR_DIR / "reports"
