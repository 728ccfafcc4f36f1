"""The per-tenant AI cache against a real Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from app.ai.cache import DEFAULT_TTLS, AiCache, input_digest
from app.settings import Settings

MODEL = "gpt-6-luna"


@pytest.fixture
def cache(redis: aioredis.Redis) -> AiCache:
    return AiCache(redis, prefix=f"test:aicache:{uuid.uuid4().hex[:8]}:")


def tenant() -> str:
    return str(uuid.uuid4())


def counter(name: str, task: str) -> float:
    return REGISTRY.get_sample_value(name, {"task": task}) or 0.0


async def store(cache: AiCache, tenant_id: str, input: dict, task: str = "summarize") -> None:
    await cache.set(
        tenant_id, task, MODEL, input, {"summary": "short"}, Decimal("0.000450"), 1000, 500
    )


async def test_miss_then_hit(cache: AiCache) -> None:
    t, input = tenant(), {"text": "A long article.", "max_words": 50}
    hits, misses = (
        counter("wfs_ai_cache_hits_total", "summarize"),
        counter("wfs_ai_cache_misses_total", "summarize"),
    )
    assert await cache.get(t, "summarize", MODEL, input) is None
    await store(cache, t, input)
    entry = await cache.get(t, "summarize", MODEL, input)
    assert entry is not None
    assert entry.output == {"summary": "short"}
    assert entry.cost_usd == Decimal("0.000450") and isinstance(entry.cost_usd, Decimal)
    assert (entry.input_tokens, entry.output_tokens) == (1000, 500)
    assert abs(datetime.now(UTC) - entry.created_at) < timedelta(seconds=10)
    assert counter("wfs_ai_cache_hits_total", "summarize") == hits + 1
    assert counter("wfs_ai_cache_misses_total", "summarize") == misses + 1
    # Another model or task is another entry.
    assert await cache.get(t, "summarize", "gpt-6.2-sol", input) is None
    assert await cache.get(t, "extract_entities", MODEL, input) is None


async def test_normalised_inputs_share_an_entry(cache: AiCache) -> None:
    t = tenant()
    await store(cache, t, {"text": "Café  au lait\n\tplease", "max_words": 50, "tags": ["a  b"]})
    variants = [
        {"max_words": 50, "tags": ["a b"], "text": "Café au lait please"},
        {"tags": [" a b "], "text": "  Cafe\u0301 au\u00a0lait please ", "max_words": 50},
    ]
    for variant in variants:
        assert await cache.get(t, "summarize", MODEL, variant) is not None, variant
    for different in (
        {"text": "Café au lait please!", "max_words": 50, "tags": ["a b"]},
        {"text": "Café au lait please", "max_words": 51, "tags": ["a b"]},
        {"text": "Café au lait please", "max_words": 50, "tags": ["ab"]},
    ):
        assert await cache.get(t, "summarize", MODEL, different) is None, different


def test_digest_is_canonical_json() -> None:
    assert input_digest({"b": 1, "a": " x  y "}) == input_digest({"a": "x y", "b": 1})
    assert input_digest({"a": 1}) != input_digest({"a": "1"})
    assert input_digest({"a ": 1}) != input_digest({"a": 1})  # keys are not rewritten


async def test_ttl_per_task(cache: AiCache, redis: aioredis.Redis) -> None:
    t, input = tenant(), {"text": "hello"}
    assert DEFAULT_TTLS == {
        "generate_text": 3600,
        "classify_content": 7 * 86400,
        "summarize": 86400,
        "extract_entities": 86400,
        "personalize_content": 3600,
        "optimize_timing": 600,
    }
    for task, ttl in DEFAULT_TTLS.items():
        await store(cache, t, input, task)
        assert ttl - 5 <= await redis.ttl(cache.key(t, task, MODEL, input)) <= ttl, task


async def test_ttl_overrides(redis: aioredis.Redis) -> None:
    cache = AiCache(
        redis,
        prefix=f"test:aicache:{uuid.uuid4().hex[:8]}:",
        ttls={"summarize": 120, "generate_text": 0},
    )
    t, input = tenant(), {"text": "hello"}
    await store(cache, t, input, "summarize")
    assert 115 <= await redis.ttl(cache.key(t, "summarize", MODEL, input)) <= 120
    await store(cache, t, input, "generate_text")  # 0 disables caching for the task
    assert await cache.get(t, "generate_text", MODEL, input) is None
    with pytest.raises(ValueError, match="no cache TTL"):
        cache.key(t, "translate", MODEL, input)


async def test_tenants_never_share_entries(cache: AiCache) -> None:
    a, b, input = tenant(), tenant(), {"text": "identical input"}
    await store(cache, a, input)
    assert await cache.get(b, "summarize", MODEL, input) is None
    assert await cache.get(a, "summarize", MODEL, input) is not None
    assert cache.key(a, "summarize", MODEL, input) != cache.key(b, "summarize", MODEL, input)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"v": 1, "output": {}}',
        b'{"v": 1, "output": [], "cost_usd": "0", "input_tokens": 1, "output_tokens": 1, '
        b'"created_at": "2025-01-01T00:00:00+00:00"}',
        b'{"v": 1, "output": {}, "cost_usd": "abc", "input_tokens": 1, "output_tokens": 1, '
        b'"created_at": "2025-01-01T00:00:00+00:00"}',
        b'{"v": 99, "output": {}}',
    ],
)
async def test_corrupt_entries_are_misses_and_deleted(
    cache: AiCache, redis: aioredis.Redis, raw: bytes
) -> None:
    t, input = tenant(), {"text": "x"}
    key = cache.key(t, "summarize", MODEL, input)
    await redis.set(key, raw)
    assert await cache.get(t, "summarize", MODEL, input) is None
    assert await redis.exists(key) == 0


async def test_decoded_responses_client(settings: Settings) -> None:
    assert settings.redis_url
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    cache = AiCache(client, prefix=f"test:aicache:{uuid.uuid4().hex[:8]}:")
    t = tenant()
    await store(cache, t, {"text": "ünïcode"})
    entry = await cache.get(t, "summarize", MODEL, {"text": "ünïcode"})
    assert entry is not None and entry.cost_usd == Decimal("0.00045")
    await client.aclose()


async def test_redis_down_is_a_miss_and_a_no_op() -> None:
    down = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.5)
    cache = AiCache(down)
    await store(cache, tenant(), {"text": "x"})  # no exception
    assert await cache.get(tenant(), "summarize", MODEL, {"text": "x"}) is None
    await down.aclose()
