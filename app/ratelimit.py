"""Per-tenant request rate limit: a fixed one-minute window counted in Redis.

Shared by every API replica. If Redis is unreachable the limiter lets requests through
(availability over strictness) and logs it; readiness already reports Redis as down.
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

    async def check(self, key: str) -> None:
        """Count one request for key; raises RateLimited past the limit."""
        if self.per_minute <= 0:
            return
        now = time.time()
        window = int(now // 60)
        name = f"{self.prefix}{key}:{window}"
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, 120)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("ratelimit.unavailable", error=str(exc))
            return
        if count > self.per_minute:
            retry_after = max(1, int((window + 1) * 60 - now))
            raise RateLimited(
                f"rate limit of {self.per_minute} requests per minute exceeded; "
                f"retry in {retry_after}s",
                retry_after=retry_after,
            )
