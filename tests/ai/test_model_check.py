"""The model check: each provider's model list (GET /v1/models through the real SDKs, against
the fake LLM server) compared with the catalogue's models; missing ones reported in Redis (for
aiProviders and /readyz), as a metric, and in `wfs dev`'s banner."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from app.ai.fake_llm import FakeLLM, FakeLLMServer
from app.ai.model_check import check_models, detail, publish_check, read_check
from app.ai.providers import build_providers
from app.cli.dev_banner import model_check_lines
from app.settings import Settings

RETIRED = "gpt-4o"
STALE = {
    "models": {"openai": {RETIRED: {"input": "2.50", "output": "10.00"}}},
    "tiers": {"premium": {"default": [f"openai/{RETIRED}", "anthropic/claude-sonnet-5-5"]}},
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(FakeLLM()) as running:
        yield running


@pytest.fixture
def fake(server: FakeLLMServer) -> FakeLLM:
    server.fake.reset()
    return server.fake


def pointed(settings: Settings, server: FakeLLMServer, catalog: dict | None) -> Settings:
    return settings.model_copy(
        update={
            "openai_base_url": server.openai_base_url,
            "anthropic_base_url": server.anthropic_base_url,
            "ai_catalog": json.dumps(catalog) if catalog else None,
        }
    )


def not_listed(model: str) -> float | None:
    return REGISTRY.get_sample_value(
        "wfs_ai_model_unavailable", {"provider": "openai", "model": model, "reason": "not_listed"}
    )


async def test_models_the_provider_does_not_list_are_reported(
    settings: Settings, server: FakeLLMServer, fake: FakeLLM, redis: aioredis.Redis
) -> None:
    stale = pointed(settings, server, STALE)
    result = await check_models(build_providers(stale), stale.catalog())
    assert result.missing() == [f"openai/{RETIRED}"]
    by_name = {p.provider: p for p in result.providers}
    assert set(by_name) == {"openai", "anthropic"} and by_name["anthropic"].missing == []
    assert RETIRED in by_name["openai"].configured and "gpt-6.2-sol" in by_name["openai"].configured
    assert {c.api for c in fake.calls()} == {"models"}  # listings only, no model calls
    assert not_listed(RETIRED) == 1

    key = f"test:aimodels:{uuid.uuid4().hex}"
    await publish_check(redis, result, key=key)
    again = await read_check(redis, key=key)
    assert again is not None and again.missing() == [f"openai/{RETIRED}"]
    assert detail(again)["missing"] == [f"openai/{RETIRED}"]
    assert detail(None) == {"checked": False}
    await redis.set(key, "{")  # unreadable: no report rather than an error
    assert await read_check(redis, key=key) is None
    await redis.delete(key)

    fake.models.append(RETIRED)  # the provider lists it (again): the gauge drops
    try:
        assert (await check_models(build_providers(stale), stale.catalog())).missing() == []
        assert not_listed(RETIRED) == 0
    finally:
        fake.models.remove(RETIRED)


async def test_a_failed_listing_is_an_error_not_a_missing_model(
    settings: Settings, server: FakeLLMServer, fake: FakeLLM
) -> None:
    fake.rule(provider="anthropic", api="models", status=500)
    checked = pointed(settings, server, None)
    result = await check_models(build_providers(checked), checked.catalog(), timeout=5)
    by_name = {p.provider: p for p in result.providers}
    assert by_name["anthropic"].missing == [] and by_name["anthropic"].error is not None
    assert by_name["anthropic"].error.startswith("server:")
    assert by_name["openai"].error is None and result.missing() == []


async def test_wfs_dev_banner_names_missing_models(
    settings: Settings, server: FakeLLMServer, fake: FakeLLM
) -> None:
    lines = await model_check_lines(pointed(settings, server, STALE))
    assert any(f"openai/{RETIRED}" in line for line in lines)
    fine = await model_check_lines(pointed(settings, server, None))
    assert len(fine) == 1 and "catalogue models listed" in fine[0]
