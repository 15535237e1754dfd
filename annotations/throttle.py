"""Login throttling, and the public link's account creation, on Django's cache (Redis with
`CACHE_URL`, else files under VAR_DIR).

Failed logins are counted per username and per client IP. A counter lives for
`LOGIN_LOCKOUT_S` seconds after its latest failure; once it reaches its limit
(`LOGIN_MAX_FAILURES` for a username, `LOGIN_MAX_FAILURES_PER_IP` for an address) every
further attempt is refused, without checking the password, until the counter expires.
Unknown usernames are counted exactly like real ones, so the answers never tell whether
an account exists. An attempt is counted before its password is checked
(`login_attempt_begin`), so parallel attempts check no more passwords than the limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest

LOCKED_MESSAGE = (
    "Too many failed log-in attempts. Please wait {minutes} minutes before trying again."
)


def _key(kind: str, value: str) -> str:
    # Hashed: any username is a safe, fixed-length cache key (file name or Redis key).
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return f"login-failures:{kind}:{digest}"


def _counters(*, username: str, ip: str) -> list[tuple[str, int]]:
    """(cache key, limit) of each counter an attempt touches."""
    counters = [(_key("user", username.casefold()), settings.LOGIN_MAX_FAILURES)]
    if ip:
        counters.append((_key("ip", ip), settings.LOGIN_MAX_FAILURES_PER_IP))
    return counters


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or behind a proxy that appends to
    X-Forwarded-For (`TRUST_X_FORWARDED_FOR`) the last address it appended, which a
    client cannot forge."""
    if settings.TRUST_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-1]
    return request.META.get("REMOTE_ADDR", "")


def login_attempt_begin(*, username: str, ip: str) -> bool:
    """Take this attempt's place in the username's and the address's counts before its
    password is checked; False, and nothing counted, when either is at its limit (refuse
    the attempt). A place taken stays as a failure unless `login_success_record` or
    `login_attempt_abandon` gives it back."""
    return _places_take(_counters(username=username, ip=ip), settings.LOGIN_LOCKOUT_S)


def entry_account_allowed(*, study_id: int, ip: str) -> bool:
    """Whether a study's public link may make one more account now: at most
    `ENTRY_NEW_ACCOUNTS_PER_IP` from one address and `ENTRY_NEW_ACCOUNTS_PER_STUDY` for one
    study in `ENTRY_WINDOW_S` (counted from the latest; a returning participant's own
    account is not counted). Takes the place when it answers True."""
    counters = [(_key("entry-study", str(study_id)), settings.ENTRY_NEW_ACCOUNTS_PER_STUDY)]
    if ip:
        counters.append((_key("entry-ip", ip), settings.ENTRY_NEW_ACCOUNTS_PER_IP))
    return _places_take(counters, settings.ENTRY_WINDOW_S)


def _places_take(counters: list[tuple[str, int]], timeout_s: int) -> bool:
    """Count one more in each counter, living `timeout_s` after it; False, and nothing
    counted, when any is already at its limit.

    Atomic on every configured cache, so parallel requests never get past a limit: the file
    cache's `incr` is a read then a write, so there the check and the count are done under an
    exclusive lock on a file beside it (every process of one machine shares it); Redis counts
    with its own atomic INCR (taken back when over)."""
    if _counts_atomically():
        taken = []
        for key, limit in counters:
            taken.append(key)
            if _redis_incr(key, timeout_s) > limit:
                for done in taken:
                    cache.decr(done)
                return False
            cache.touch(key, timeout_s)
        return True
    with _count_lock():
        counts = cache.get_many([key for key, _ in counters])
        if any(counts.get(key, 0) >= limit for key, limit in counters):
            return False
        cache.set_many({key: counts.get(key, 0) + 1 for key, _ in counters}, timeout_s)
    return True


def _redis_incr(key: str, timeout_s: int) -> int:
    cache.add(key, 0, timeout_s)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout_s)
        return 1


def login_success_record(*, username: str, ip: str) -> None:
    """Forget the username's failures and give the address its place back. The address
    keeps its failures: one valid account must not reset the budget for guessing others'
    passwords."""
    cache.delete(_key("user", username.casefold()))
    if ip:
        _give_back(_key("ip", ip))


def login_attempt_abandon(*, username: str, ip: str) -> None:
    """An attempt that ended without an answer on its password (an error of ours): give
    back both places it took."""
    for key, _ in _counters(username=username, ip=ip):
        _give_back(key)


def _give_back(key: str) -> None:
    if _counts_atomically():
        try:
            cache.decr(key)
        except ValueError:  # expired meanwhile: nothing to give back
            pass
        return
    with _count_lock():
        count = cache.get(key)
        if count:
            cache.set(key, count - 1, settings.LOGIN_LOCKOUT_S)


def _counts_atomically() -> bool:
    return isinstance(cache, RedisCache)


@contextlib.contextmanager
def _count_lock() -> Iterator[None]:
    """An exclusive lock for the counts, across the threads and processes of one machine
    (a lock per open file: each call opens its own)."""
    path = Path(settings.VAR_DIR) / "login-throttle.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def locked_message() -> str:
    return LOCKED_MESSAGE.format(minutes=max(1, round(settings.LOGIN_LOCKOUT_S / 60)))
