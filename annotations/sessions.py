"""Sessions read from Redis and written through to the database, surviving a Redis outage.

Django's `cached_db` store spares every request its session query, but a Redis that is
down or restarting would fail requests it only sped up: its `load` stores what it read
from the database back into the cache without guarding that write, and `exists` and
`delete` ask the cache unguarded. Here a cache error on a read costs only the database
read; the database stays the record, so no one is logged out by a Redis restart. A delete
(log-out, a new session at log-in) still fails while Redis is down: a cached copy left
behind would keep the ended session alive once Redis is back.

Here, in the app, not in `webapp`, because the highlighted outputs' cache
(`annotations.highlight`) tolerates the same outage by the same rule (`CACHE_DOWN`), and the
app imports nothing from the wiring above it."""

from __future__ import annotations

import contextlib
import logging

from django.contrib.sessions.backends import cached_db, db
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# What a Redis cache that is down raises (a refused or reset connection); the highlighted
# outputs' cache (`annotations.highlight`) tolerates the same.
CACHE_DOWN = (RedisError, OSError)


class SessionStore(cached_db.SessionStore):
    def load(self) -> dict:
        try:
            data = self._cache.get(self.cache_key)
        except CACHE_DOWN as error:
            log.warning("session cache unavailable, reading the database: %s", error)
            data = None
        if data is not None:
            return data
        row = self._get_session_from_db()
        if row is None:
            return {}
        data = self.decode(row.session_data)
        with contextlib.suppress(*CACHE_DOWN):
            self._cache.set(self.cache_key, data, self.get_expiry_age(expiry=row.expire_date))
        return data

    def exists(self, session_key: str) -> bool:
        try:
            return super().exists(session_key)
        except CACHE_DOWN:
            return db.SessionStore.exists(self, session_key)
