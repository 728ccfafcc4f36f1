"""The example plugin's AI task and provider in the real AI gateway: `example.tone` is routed
to the plugin's provider (`example.local`, the existing OpenAI provider at the URL in
PLUGIN_EXAMPLE_LLM_BASE_URL, here the wire-compatible fake LLM), costed with the plugin's prices,
its output checked against the task's output schema, and the declared baseline answers when
the model's output is invalid. The AI worker registers `ai.example.tone`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from temporalio.activity import _Definition

from app.ai.budget import BudgetLedger
from app.ai.cache import AiCache
from app.ai.contracts import AiRequest
from app.ai.fake_llm import FakeLLMServer
from app.ai.gateway import AiGateway, TenantAi
from app.ai.health import ProviderHealth
from app.ai.providers import build_providers
from app.plugins.registry import activate
from app.settings import Settings
from app.tenants.service import TenantService
from workers.ai_activities import AiActivities

PRO = TenantAi(tier="pro", enabled=True, budget_usd=Decimal("10"), overrides={})


@pytest.fixture
def example_provider(
    settings: Settings, fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The deployment configures the example provider (the AI worker's environment)."""
    assert "example" in activate(settings).loaded
    monkeypatch.setenv("PLUGIN_EXAMPLE_LLM_API_KEY", "example-key")
    monkeypatch.setenv("PLUGIN_EXAMPLE_LLM_BASE_URL", fake_llm.openai_base_url)
    if "example-small" not in fake_llm.fake.models:  # the fake answers 404 for unknown models
        fake_llm.fake.models.append("example-small")
    yield


async def test_a_plugin_task_runs_on_the_plugins_provider_and_falls_back_to_its_baseline(
    example_provider: None, settings: Settings, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    assert settings.redis_url
    redis = aioredis.from_url(settings.redis_url)
    providers = build_providers(settings)
    assert "example.local" in providers
    gateway = AiGateway(
        providers=providers,
        ledger=BudgetLedger(redis),
        cache=AiCache(redis),
        health=ProviderHealth(),
        sessions=sessions,
        timeout_seconds=5,
    )
    async with sessions() as session:
        tenant = await TenantService(session).create_tenant(f"pl-{uuid.uuid4().hex[:8]}", "pro")
        await session.commit()
    good, bad = uuid.uuid4().hex, uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=good,
        json={"tone": "positive", "confidence": 0.9},
        usage={"input_tokens": 1000, "output_tokens": 100},
    )
    fake_llm.fake.rule(contains=bad, json={"tone": "furious", "confidence": 2})
    try:
        outcome = await gateway.run(
            AiRequest("example.tone", {"text": f"What a lovely day {good}"}, str(tenant.id)), PRO
        )
        assert outcome.output == {"tone": "positive", "confidence": 0.9}
        assert (outcome.provider, outcome.model) == ("example.local", "example-small")
        # 1000 x 0.05 + 100 x 0.20 per million tokens: the plugin's own prices.
        assert outcome.cost_usd == Decimal("0.000070")
        sent = [c for c in fake_llm.fake.calls() if good in str(c.body)]
        assert [(c.model, c.api_key) for c in sent] == [("example-small", "example-key")]

        fallback = await gateway.run(
            AiRequest("example.tone", {"text": f"Hmm {bad}"}, str(tenant.id)), PRO
        )
        assert fallback.output == {"tone": "neutral", "confidence": 0.0}
        assert (fallback.fallback_reason, fallback.provider) == ("INVALID_OUTPUT", "example.local")
    finally:
        await redis.aclose()

    names = {
        _Definition.must_from_callable(fn).name
        for fn in AiActivities(gateway, sessions, settings).all()
    }
    assert {"ai.example.tone", "ai.summarize"} <= names
