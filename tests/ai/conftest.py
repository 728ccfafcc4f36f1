"""Fixtures the AI tests share."""

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.settings import Settings


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    assert settings.redis_url
    client = aioredis.from_url(settings.redis_url)
    yield client
    await client.aclose()
