"""Request rate limits: a fixed one-minute window per key, counted in Redis.

Keys are `tenant:<id>` (an authenticated caller's budget, shared by all its keys and by HTTP
and WebSocket operations), `platform:<key id>` (a platform credential's) and `ip:<address>`
(callers without a valid key). Shared by every API
replica. If Redis is unreachable the limiter lets requests through (availability over
strictness) and logs it; readiness already reports Redis as down.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from app.errors import RateLimited

log = structlog.get_logger(__name__)


class RateLimiter:
    def __init__(self, redis: aioredis.Redis, per_minute: int, prefix: str = "wfs:rl:") -> None:
        self.redis, self.per_minute, self.prefix = redis, per_minute, prefix

    async def check(self, key: str, *, cost: int = 1, per_minute: int | None = None) -> None:
        """Count `cost` requests for key; raises RateLimited past the limit (0: no limit).

        `per_minute` overrides the limit this limiter was built with (anonymous callers).
        """
        limit = self.per_minute if per_minute is None else per_minute
        if limit <= 0:
            return
        now = time.time()
        name = self._name(key, now)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incrby(name, cost)
                pipe.expire(name, 120)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("ratelimit.unavailable", error=str(exc))
            return
        if count > limit:
            raise _refusal(limit, now)

    async def exceeded(self, key: str, *, per_minute: int | None = None) -> RateLimited | None:
        """The refusal if key is already over its limit, without counting a request.

        A cheap gate for work that should not even start (an API-key lookup for an address
        that keeps sending bad keys).
        """
        limit = self.per_minute if per_minute is None else per_minute
        if limit <= 0:
            return None
        now = time.time()
        try:
            count = await self.redis.get(self._name(key, now))
        except (RedisError, OSError) as exc:
            log.warning("ratelimit.unavailable", error=str(exc))
            return None
        return _refusal(limit, now) if count is not None and int(count) >= limit else None

    def _name(self, key: str, now: float) -> str:
        return f"{self.prefix}{key}:{int(now // 60)}"


def _refusal(limit: int, now: float) -> RateLimited:
    retry_after = max(1, int((int(now // 60) + 1) * 60 - now))
    return RateLimited(
        f"rate limit of {limit} requests per minute exceeded; retry in {retry_after}s",
        retry_after=retry_after,
    )
