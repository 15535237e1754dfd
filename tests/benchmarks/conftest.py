"""Fixtures shared with the engine tests."""

from tests.inference.conftest import tiny_dir  # noqa: F401  (a fixture for the bench tests)
