"""Per-tenant cache of validated AI outputs in Redis.

Key: prefix + tenant id + task + model + SHA-256 of the normalised input, so entries are never
shared across tenants. The input is normalised before hashing (canonical JSON with sorted keys and
no spaces; strings NFC-normalised, whitespace collapsed and trimmed), so inputs that differ only
in key order or spacing share an entry.

The cache is an optimisation: when Redis is unreachable get() is a miss and set() a no-op (with a
logged warning), and an entry that cannot be decoded is deleted and treated as a miss.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from app.ai import extensions
from app.ai.metrics import AI_CACHE_HITS, AI_CACHE_MISSES

log = structlog.get_logger(__name__)

# Seconds; a TTL <= 0 disables caching for that task.
DEFAULT_TTLS: Mapping[str, int] = {
    "generate_text": 3600,
    "classify_content": 7 * 24 * 3600,
    "summarize": 24 * 3600,
    "extract_entities": 24 * 3600,
    "personalize_content": 3600,
    "optimize_timing": 600,
}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CachedEntry:
    output: dict[str, Any]
    cost_usd: Decimal  # what the original call cost (what a hit saves)
    input_tokens: int
    output_tokens: int
    created_at: datetime


def normalise(value: Any) -> Any:
    """Strings NFC-normalised with whitespace collapsed and trimmed, recursively. Object keys
    are left as they are so two different keys can never merge into one."""
    if isinstance(value, str):
        return " ".join(unicodedata.normalize("NFC", value).split())
    if isinstance(value, Mapping):
        return {key: normalise(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(item) for item in value]
    return value


def input_digest(input: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of the normalised input."""
    canonical = json.dumps(
        normalise(input), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class AiCache:
    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str = "wfs:aicache:",
        ttls: Mapping[str, int] | None = None,
    ) -> None:
        self.redis, self.prefix = redis, prefix
        # Plugins' tasks (app/ai/extensions.py) have TTLs of their own.
        self.ttls: dict[str, int] = {**DEFAULT_TTLS, **extensions.CACHE_TTLS, **(ttls or {})}

    def key(self, tenant_id: str, task: str, model: str, input: Mapping[str, Any]) -> str:
        """The Redis key of an entry. Raises ValueError for a task without a TTL."""
        if task not in self.ttls:
            raise ValueError(f"no cache TTL for task {task!r}")
        return f"{self.prefix}{tenant_id}:{task}:{model}:{input_digest(input)}"

    async def get(
        self, tenant_id: str, task: str, model: str, input: Mapping[str, Any]
    ) -> CachedEntry | None:
        """The cached entry, or None on a miss, a corrupt entry or Redis trouble."""
        key = self.key(tenant_id, task, model, input)
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError) as exc:
            log.warning("ai.cache.unavailable", op="get", task=task, error=str(exc))
            raw = None
        entry = None if raw is None else await self._decode(key, raw)
        (AI_CACHE_HITS if entry else AI_CACHE_MISSES).labels(task).inc()
        return entry

    async def set(
        self,
        tenant_id: str,
        task: str,
        model: str,
        input: Mapping[str, Any],
        output: dict[str, Any],
        cost_usd: Decimal,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        """Store a validated output for the task's TTL. Never raises on Redis trouble."""
        key = self.key(tenant_id, task, model, input)
        ttl = self.ttls[task]
        if ttl <= 0:
            return
        payload = json.dumps(
            {
                "v": FORMAT_VERSION,
                "output": output,
                "cost_usd": str(cost_usd),
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "created_at": datetime.now(UTC).isoformat(),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        try:
            await self.redis.set(key, payload, ex=ttl)
        except (RedisError, OSError) as exc:
            log.warning("ai.cache.unavailable", op="set", task=task, error=str(exc))

    async def _decode(self, key: str, raw: bytes | str) -> CachedEntry | None:
        try:
            data = json.loads(raw)
            if data["v"] != FORMAT_VERSION or not isinstance(data["output"], dict):
                raise ValueError("unexpected entry format")
            created_at = datetime.fromisoformat(data["created_at"])
            return CachedEntry(
                output=data["output"],
                cost_usd=Decimal(str(data["cost_usd"])),
                input_tokens=int(data["input_tokens"]),
                output_tokens=int(data["output_tokens"]),
                created_at=created_at,
            )
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            log.warning("ai.cache.corrupt", key=key, error=repr(exc))
        try:
            await self.redis.delete(key)
        except (RedisError, OSError) as exc:
            log.warning("ai.cache.unavailable", op="delete", error=str(exc))
        return None
