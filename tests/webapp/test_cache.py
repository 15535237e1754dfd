"""The Redis cache backend (webapp/cache.py): one client per pool, reused by every call,
that reads and writes a real Redis and reconnects after a restart."""

from django.core.cache.backends.redis import RedisCacheClient

from tests.support.servers import private_redis
from webapp.cache import RedisCache


def test_one_client_serves_every_call_and_survives_a_restart(tmp_path):
    with private_redis(tmp_path) as redis:
        cache = RedisCache(redis.url, {})
        assert isinstance(cache._cache, RedisCacheClient)
        first = cache._cache.get_client(write=True)
        cache.set("k", {"v": 1})
        assert cache.get("k") == {"v": 1}
        assert cache.get_many(["k", "missing"]) == {"k": {"v": 1}}
        assert cache._cache.get_client() is first, "a new Redis client was built for a call"

        redis.kill()
        redis.start()  # empty, like a crashed server
        cache.set("k", 2)
        assert cache.get("k") == 2, "the shared client did not reconnect after the restart"
