"""Login throttling on Django's cache (Redis with `CACHE_URL`, else files under VAR_DIR).

Failed logins are counted per username and per client IP. A counter lives for
`LOGIN_LOCKOUT_S` seconds after its latest failure; once it reaches its limit
(`LOGIN_MAX_FAILURES` for a username, `LOGIN_MAX_FAILURES_PER_IP` for an address) every
further attempt is refused, without checking the password, until the counter expires.
Unknown usernames are counted exactly like real ones, so the answers never tell whether
an account exists.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache
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


def login_locked(*, username: str, ip: str) -> bool:
    """Whether attempts for this username or from this address are refused right now."""
    counters = _counters(username=username, ip=ip)
    counts = cache.get_many([key for key, _ in counters])
    return any(counts.get(key, 0) >= limit for key, limit in counters)


def login_failure_record(*, username: str, ip: str) -> None:
    """Count one failed attempt for the username and for the address."""
    timeout = settings.LOGIN_LOCKOUT_S
    for key, _ in _counters(username=username, ip=ip):
        # add + incr is atomic on Redis, so parallel guesses cannot slip past the count.
        cache.add(key, 0, timeout)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout)
        # incr keeps no timeout on every backend (the file cache resets it): set it again.
        cache.touch(key, timeout)


def login_success_record(*, username: str) -> None:
    """Forget the username's failures. The address keeps its count: one valid account
    must not reset the budget for guessing others' passwords."""
    cache.delete(_key("user", username.casefold()))


def locked_message() -> str:
    return LOCKED_MESSAGE.format(minutes=max(1, round(settings.LOGIN_LOCKOUT_S / 60)))
