"""The AI gateway through the real SDKs against the fake LLM server, with real Redis and
PostgreSQL: routing by tier, cost, cache, isolation, failover, breaker, invalid output,
budget exhaustion under concurrency, and the usage rows it records."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from app.ai import pricing
from app.ai.budget import BudgetLedger
from app.ai.cache import AiCache
from app.ai.contracts import AiRequest
from app.ai.fake_llm import FakeLLMServer
from app.ai.gateway import AiGateway, AiInputError, TenantAi
from app.ai.health import ProviderHealth
from app.ai.providers import build_providers
from app.models import AiUsage
from app.settings import Settings
from app.tenants.service import TenantService

PREMIUM = TenantAi(tier="premium", enabled=True, budget_usd=Decimal("100"), overrides={})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gateway(settings: Settings, sessions: Any, redis: aioredis.Redis, clock: Clock) -> AiGateway:
    return AiGateway(
        providers=build_providers(settings),
        ledger=BudgetLedger(redis),
        cache=AiCache(redis),
        health=ProviderHealth(clock=clock, open_seconds=30),
        sessions=sessions,
        timeout_seconds=5,
    )


async def new_tenant(sessions: Any, tier: str = "premium") -> str:
    async with sessions() as session:
        tenant = await TenantService(session).create_tenant(f"ai-{uuid.uuid4().hex[:8]}", tier)
        await session.commit()
    return str(tenant.id)


def classify(tenant_id: str, marker: str) -> AiRequest:
    text = f"Invoice {marker}: total due $40 by 2026-12-01."
    return AiRequest(
        "classify_content", {"text": text, "categories": ["invoice", "contract"]}, tenant_id
    )


def calls(fake_llm: FakeLLMServer, marker: str, provider: str | None = None) -> int:
    return sum(marker in str(c.body) for c in fake_llm.fake.calls(provider=provider))


async def test_free_tier_uses_the_baseline_without_calling_a_model(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    tenant = await new_tenant(sessions, "free")
    marker = uuid.uuid4().hex
    free = TenantAi(tier="free", enabled=True, budget_usd=Decimal("0"), overrides={})
    outcome = await gateway.run(classify(tenant, marker), free)
    assert (outcome.provider, outcome.fallback_reason, outcome.output["category"]) == (
        "baseline",
        "TIER",
        "invoice",
    )
    assert calls(fake_llm, marker) == 0
    off = TenantAi(tier="premium", enabled=False, budget_usd=Decimal("10"), overrides={})
    assert (await gateway.run(classify(tenant, marker), off)).fallback_reason == "DISABLED"


async def test_model_call_is_costed_cached_and_recorded(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=marker,
        json={"category": "invoice", "confidence": 0.97},
        usage={"input_tokens": 1200, "output_tokens": 30},
    )
    first = await gateway.run(classify(tenant, marker), PREMIUM)
    assert (first.provider, first.model, first.outcome) == ("openai", "gpt-6.2-sol", "OK")
    assert first.output == {"category": "invoice", "confidence": 0.97}
    assert (first.input_tokens, first.output_tokens) == (1200, 30)
    assert first.cost_usd == pricing.cost("openai", "gpt-6.2-sol", 1200, 30) == Decimal("0.002700")

    again = await gateway.run(classify(tenant, marker), PREMIUM)
    assert (again.cached, again.outcome, again.cost_usd, again.saved_usd) == (
        True,
        "CACHED",
        Decimal(0),
        first.cost_usd,
    )
    assert calls(fake_llm, marker) == 1

    other = await new_tenant(sessions)  # the same input for another tenant is not a hit
    assert not (await gateway.run(classify(other, marker), PREMIUM)).cached
    assert calls(fake_llm, marker) == 2

    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(AiUsage).where(AiUsage.tenant_id == uuid.UUID(tenant)).order_by(AiUsage.id)
            )
        )
    assert [(r.outcome, r.cached, r.cost_usd, r.saved_usd) for r in rows] == [
        ("OK", False, Decimal("0.002700"), Decimal(0)),
        ("CACHED", True, Decimal(0), Decimal("0.002700")),
    ]


async def test_failover_to_the_other_provider_then_breaker_opens_and_recovers(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer, clock: Clock
) -> None:
    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(provider="openai", contains=marker, status=500)
    fake_llm.fake.rule(
        provider="anthropic", contains=marker, json={"category": "invoice", "confidence": 0.8}
    )
    outcome = await gateway.run(classify(tenant, marker + "-0"), PREMIUM)
    assert (outcome.provider, outcome.model) == ("anthropic", "claude-sonnet-5-5")
    assert outcome.attempts[0]["kind"] == "server"
    for i in range(1, 5):  # five failures in the window open OpenAI's breaker
        assert (
            await gateway.run(classify(tenant, f"{marker}-{i}"), PREMIUM)
        ).provider == "anthropic"
    assert gateway.health.state("openai", "gpt-6.2-sol") == "OPEN"
    before = calls(fake_llm, marker, "openai")
    skipped = await gateway.run(classify(tenant, f"{marker}-5"), PREMIUM)
    assert skipped.provider == "anthropic"
    assert calls(fake_llm, marker, "openai") == before  # not even tried
    assert skipped.attempts[0]["kind"] == "breaker_open"

    fake_llm.fake.reset()  # OpenAI recovers; after open_seconds one trial call closes it
    fake_llm.fake.rule(contains=marker, json={"category": "invoice", "confidence": 0.9})
    clock.now += 31
    assert gateway.health.state("openai", "gpt-6.2-sol") == "HALF_OPEN"
    recovered = await gateway.run(classify(tenant, f"{marker}-6"), PREMIUM)
    assert recovered.provider == "openai"
    assert gateway.health.state("openai", "gpt-6.2-sol") == "CLOSED"


async def test_every_provider_failing_gives_the_baseline(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(provider="openai", contains=marker, status=429)
    fake_llm.fake.rule(provider="anthropic", contains=marker, timeout=True)
    outcome = await gateway.run(classify(tenant, marker), PREMIUM)
    assert (outcome.provider, outcome.fallback_reason) == ("baseline", "PROVIDER_ERROR")
    assert outcome.output["category"] == "invoice"
    assert [a["provider"] for a in outcome.attempts] == ["openai", "anthropic"]


async def test_invalid_output_is_retried_once_then_the_baseline_answers(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=marker,
        json={"category": "hacked", "confidence": 1},
        usage={"input_tokens": 100, "output_tokens": 10},
    )
    outcome = await gateway.run(classify(tenant, marker), PREMIUM)
    assert (outcome.provider, outcome.fallback_reason) == ("openai", "INVALID_OUTPUT")
    assert outcome.output["category"] == "invoice"  # the baseline's answer
    assert outcome.cost_usd == 2 * pricing.cost("openai", "gpt-6.2-sol", 100, 10)  # both were paid
    assert calls(fake_llm, marker) == 2


async def test_fifty_concurrent_calls_cannot_overspend_the_budget(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=marker,
        json={"category": "invoice", "confidence": 0.9},
        usage={"input_tokens": 400, "output_tokens": 20},
        latency_ms=50,
    )
    one_call = pricing.cost("openai", "gpt-6.2-sol", 400, 20)  # $0.0012
    limit = Decimal("0.02")
    tight = TenantAi(tier="premium", enabled=True, budget_usd=limit, overrides={})
    outcomes = await asyncio.gather(
        *[gateway.run(classify(tenant, f"{marker}-{i}"), tight) for i in range(50)]
    )
    paid = [o for o in outcomes if o.outcome == "OK"]
    refused = [o for o in outcomes if o.fallback_reason == "BUDGET"]
    assert paid and refused and len(paid) + len(refused) == 50
    spent = sum((o.cost_usd for o in paid), Decimal(0))
    assert spent <= limit + one_call
    status = await gateway.ledger.status(tenant, limit)
    assert status.spent_usd == spent and status.reserved_usd == 0


async def test_bad_input_is_an_error_not_a_fallback(gateway: AiGateway, sessions: Any) -> None:
    tenant = await new_tenant(sessions)
    with pytest.raises(AiInputError, match="categories"):
        await gateway.run(
            AiRequest("classify_content", {"text": "x", "categories": []}, tenant), PREMIUM
        )


async def test_soft_threshold_emits_one_event_and_downgrades_models(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer, redis: aioredis.Redis
) -> None:
    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=marker,
        json={"category": "invoice", "confidence": 0.9},
        usage={"input_tokens": 8000, "output_tokens": 0},
    )
    per_call = pricing.cost("openai", "gpt-6.2-sol", 8000, 0)  # $0.02
    budget = TenantAi(tier="premium", enabled=True, budget_usd=per_call * 5, overrides={})
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"wfs:tenant:{tenant}:ai")
    models = [
        (await gateway.run(classify(tenant, f"{marker}-{i}"), budget)).model for i in range(4)
    ]
    # 80% of the budget is spent after four calls: from then on the cheaper sibling answers.
    assert models == ["gpt-6.2-sol"] * 4
    assert (await gateway.run(classify(tenant, f"{marker}-4"), budget)).model == "gpt-6-luna"
    events = []
    async with asyncio.timeout(5):
        while not events:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if msg:
                events.append(msg)
    assert b"AI_BUDGET_SOFT_THRESHOLD" in events[0]["data"]
    assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5) is None
    await pubsub.aclose()


async def test_reconcile_restores_a_lost_spend_from_postgresql(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer, redis: aioredis.Redis
) -> None:
    from app.ai.wiring import reconcile_budgets

    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=marker,
        json={"category": "invoice", "confidence": 0.9},
        usage={"input_tokens": 2000, "output_tokens": 100},
    )
    paid = await gateway.run(classify(tenant, marker), PREMIUM)
    for key in [k async for k in redis.scan_iter(f"wfs:budget:{{{tenant}:*")]:
        await redis.delete(key)  # Redis lost the figures (restart without persistence)
    assert (await gateway.ledger.status(tenant, PREMIUM.budget_usd)).spent_usd == 0
    await reconcile_budgets(gateway)
    assert (await gateway.ledger.status(tenant, PREMIUM.budget_usd)).spent_usd == paid.cost_usd


async def test_a_reply_that_is_not_json_is_paid_retried_once_then_the_baseline_answers(
    gateway: AiGateway, sessions: Any, fake_llm: FakeLLMServer
) -> None:
    tenant = await new_tenant(sessions)
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=marker, text="It is an invoice.", usage={"input_tokens": 80, "output_tokens": 6}
    )
    outcome = await gateway.run(classify(tenant, marker), PREMIUM)
    assert (outcome.provider, outcome.fallback_reason) == ("openai", "INVALID_OUTPUT")
    assert outcome.output["category"] == "invoice"  # the baseline's answer
    assert (outcome.input_tokens, outcome.output_tokens) == (160, 12)
    assert outcome.cost_usd == 2 * pricing.cost("openai", "gpt-6.2-sol", 80, 6)  # both were paid
    assert [a["kind"] for a in outcome.attempts] == ["invalid_json", "invalid_json"]
    assert calls(fake_llm, marker) == 2
    assert gateway.health.state("openai", "gpt-6.2-sol") == "CLOSED"  # the provider is fine
    status = await gateway.ledger.status(tenant, PREMIUM.budget_usd)
    assert (status.spent_usd, status.reserved_usd) == (outcome.cost_usd, 0)
