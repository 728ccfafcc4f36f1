"""Redis clients, made in one place for every process (API, event bus, AI ledger).

Each client is given its driver info once: otherwise redis-py 8 looks its own version up in
the installed packages (a blocking scan of sys.path, 50-200 ms here) for every new connection,
and a burst of requests or a reconnect opens many.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.driver_info import DriverInfo

REDIS_DRIVER = DriverInfo(name="redis-py", lib_version=redis.__version__)


def redis_client(url: str, **options: Any) -> Redis:
    """A client with redis-py's default pool (it fails past its connection limit)."""
    return Redis.from_url(url, driver_info=REDIS_DRIVER, **options)


def blocking_redis_client(
    url: str, *, max_connections: int, timeout: float, **options: Any
) -> Redis:
    """A client whose callers wait up to `timeout` for a free connection under load."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, driver_info=REDIS_DRIVER, **options
    )
    return Redis(connection_pool=pool)
