"""Login throttling: failures counted per username and per address, a lock-out with a clear
message, the same answers for real and unknown usernames, on the site's and the admin's
log-in pages."""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from tests.security.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed log-in attempts"


@pytest.fixture
def limits(settings):
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_MAX_FAILURES_PER_IP = 5
    settings.LOGIN_LOCKOUT_S = 600
    return settings


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_user("alice-throttle", password=PASSWORD)


def attempt(username: str, password: str, *, ip: str = "203.0.113.1", url: str = "/login/"):
    return Client(REMOTE_ADDR=ip).post(url, {"username": username, "password": password})


def logged_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


def _message(response) -> str:
    """The page's error text, without the parts that differ per request."""
    text = response.content.decode()
    text = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)
    text = re.sub(r'"X-CSRFToken": "[^"]+"', "", text)
    return text.replace("alice-throttle", "USER").replace("ghost-throttle", "USER")


def test_a_username_is_locked_after_its_failures_even_with_the_right_password(limits, alice):
    for _ in range(3):
        response = attempt("alice-throttle", "wrong")
        assert response.status_code == 200 and LOCKED not in response.content.decode()
    locked = attempt("alice-throttle", PASSWORD, ip="203.0.113.2")
    assert locked.status_code == 429, f"the 4th attempt was not refused: {locked.status_code}"
    assert "Please wait 10 minutes" in locked.content.decode()
    assert not logged_in(locked), "a locked account logged in"
    other = get_user_model().objects.create_user("carol-throttle", password=PASSWORD)
    assert logged_in(attempt(other.username, PASSWORD)), "the lock-out spread to another user"


def test_the_lock_ends_after_the_lockout(limits, alice):
    limits.LOGIN_LOCKOUT_S = 1
    for _ in range(3):
        attempt("alice-throttle", "wrong")
    assert attempt("alice-throttle", PASSWORD).status_code == 429
    time.sleep(1.2)
    assert logged_in(attempt("alice-throttle", PASSWORD)), "still locked after the lock-out"


def test_one_address_is_locked_after_its_failures_across_usernames(limits, alice):
    for i in range(5):
        attempt(f"guess-{i}", "wrong", ip="198.51.100.7")
    response = attempt("alice-throttle", PASSWORD, ip="198.51.100.7")
    assert response.status_code == 429 and not logged_in(response)
    assert logged_in(attempt("alice-throttle", PASSWORD, ip="198.51.100.8")), (
        "a lock on one address kept a user out from another"
    )


def test_success_forgets_the_usernames_failures(limits, alice):
    for _ in range(2):
        attempt("alice-throttle", "wrong")
    assert logged_in(attempt("alice-throttle", PASSWORD))
    for _ in range(2):
        attempt("alice-throttle", "wrong", ip="203.0.113.9")
    assert logged_in(attempt("alice-throttle", PASSWORD, ip="203.0.113.9")), (
        "failures before a successful login still counted"
    )


def test_answers_do_not_tell_whether_an_account_exists(limits, alice):
    for attempt_number in range(4):
        real = attempt("alice-throttle", "wrong", ip="203.0.113.20")
        ghost = attempt("ghost-throttle", "wrong", ip="203.0.113.21")
        assert real.status_code == ghost.status_code, f"attempt {attempt_number + 1}"
        assert _message(real) == _message(ghost), (
            f"attempt {attempt_number + 1}: the page differs for a real and an unknown user"
        )
    assert LOCKED in real.content.decode()


def test_the_admin_login_is_throttled_too(limits, alice):
    admin_login = reverse("admin:login")
    staff = get_user_model().objects.create_user("boss-throttle", password=PASSWORD,
                                                 is_staff=True)
    for _ in range(3):
        attempt(staff.username, "wrong", url=admin_login)
    response = attempt(staff.username, PASSWORD, url=admin_login)
    assert LOCKED in response.content.decode(), "the admin login page is not throttled"
    assert "_auth_user_id" not in response.client.session
    # One lock for both pages: the site's login refuses too.
    assert attempt(staff.username, PASSWORD).status_code == 429


def test_behind_a_proxy_the_forwarded_address_counts(limits, alice):
    limits.TRUST_X_FORWARDED_FOR = True
    for _ in range(5):
        Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.50").post(
            "/login/", {"username": f"someone-{_}", "password": "wrong"})
    blocked = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.50")
    response = blocked.post("/login/", {"username": "alice-throttle", "password": PASSWORD})
    assert response.status_code == 429
    other = Client(REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.51")
    response = other.post("/login/", {"username": "alice-throttle", "password": PASSWORD})
    assert response.status_code == 302, "the proxy's address was counted, not the client's"


def test_oversized_credentials_are_a_form_error_not_a_count(limits):
    response = attempt("x" * 100_000, "y" * 100_000)
    assert response.status_code == 200
    assert attempt("x" * 100_000, "y").status_code == 200, "one failure locked the username"


@pytest.mark.django_db(transaction=True)  # each thread reads the users on its own connection
@pytest.mark.parametrize("password", ["wrong", PASSWORD])
def test_parallel_attempts_check_no_more_passwords_than_the_limit(limits, password):
    """12 wrong passwords at once were all checked against a limit of 5 on the file cache
    (the count was read, the password checked, then the count written): each attempt now
    takes its place in the count before its password is checked, atomically on every cache."""
    get_user_model().objects.create_user("race-throttle", password=PASSWORD)
    limits.LOGIN_MAX_FAILURES_PER_IP = 100
    attempts = 12
    start = threading.Barrier(attempts)
    statuses: list[int] = []

    def one() -> None:
        start.wait()
        statuses.append(attempt("race-throttle", "wrong").status_code)

    threads = [threading.Thread(target=one) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    checked = [s for s in statuses if s != 429]
    assert len(statuses) == attempts
    assert len(checked) == limits.LOGIN_MAX_FAILURES, (
        f"{len(checked)} passwords checked under a limit of {limits.LOGIN_MAX_FAILURES}")
    # Locked now, whatever the password.
    assert attempt("race-throttle", password).status_code == 429


def test_a_successful_login_gives_its_place_in_the_address_count_back(limits, alice):
    for _ in range(limits.LOGIN_MAX_FAILURES_PER_IP + 2):
        assert logged_in(attempt("alice-throttle", PASSWORD))
    assert attempt("ghost-throttle", "wrong").status_code == 200
