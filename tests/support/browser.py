"""Debian's chromium, driven headless by Playwright (its own browser download is not used)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is not installed (make test installs it: make browser)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextmanager
def browser_page(base_url: str) -> Iterator:
    from django.db import connections
    from playwright.sync_api import sync_playwright

    # Playwright's event loop runs in the test's thread while the test reads the database;
    # allowed for the browser's lifetime only, so no later subprocess inherits the switch.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(
                    base_url=base_url, viewport={"width": 1280, "height": 900}
                )
                # Form posts do real work (a new study counts its prompts' tokens with the
                # model's tokenizer): on a loaded 2-core machine one took over 15 s.
                page.set_default_timeout(45_000)
                yield page
            finally:
                # Database connections the test opened while Playwright's loop ran live in
                # that context's storage, which nothing closes later: the test database's
                # teardown then found "1 other session using the database".
                connections.close_all()
                browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def screenshot(page, name: str) -> Path:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page, username: str, password: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
