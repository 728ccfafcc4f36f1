"""Model errors fail over, structured outputs, and the attempts behind each call: the gateway
through the real SDKs against a fake LLM server that behaves per model like the real APIs (a
404 for a model it does not have, a model that answers only in JSON mode, the others honouring
the schema), with real Redis and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from sqlalchemy import select

from app.ai import pricing
from app.ai.attempts import MAX_MESSAGE_CHARS, sanitize
from app.ai.budget import BudgetLedger
from app.ai.cache import AiCache
from app.ai.contracts import AiRequest, InvalidOutput, ProviderError
from app.ai.fake_llm import DEFAULT_MODELS, FakeLLM, FakeLLMServer, LLMRequest
from app.ai.gateway import AiGateway, TenantAi
from app.ai.health import ProviderHealth
from app.ai.providers import AnthropicProvider, OpenAIProvider, build_providers
from app.ai.tasks import TASK_SPECS
from app.ai.traced_provider import TracedProvider
from app.ai_catalog import default_catalog
from app.ai_catalog import load as load_catalog
from app.models import AiUsage
from app.settings import Settings
from app.tenants.service import TenantService

PREMIUM = TenantAi(tier="premium", enabled=True, budget_usd=Decimal("100"), overrides={})
RETIRED = "gpt-4o"  # retired by OpenAI, unknown to the fake: a 404 like the real API's
JSON_ONLY = "local-json-model"  # a compatible server's model without structured outputs
# The premium tier as an operator with a stale catalogue has it: its first model is gone.
STALE = {
    "models": {
        "openai": {
            RETIRED: {"input": "2.50", "output": "10.00"},
            JSON_ONLY: {"input": "0", "output": "0"},
        }
    },
    "tiers": {"premium": {"default": [f"openai/{RETIRED}", "anthropic/claude-sonnet-5-5"]}},
}
INPUT = {"text": "Invoice 7: total due $40.", "categories": ["Invoice", "Contract"]}


def sloppy(request: LLMRequest) -> Any:
    """A model that answers classify_content in its own words: a label, not `category`, and
    the confidence as a string (what free-form JSON mode lets through)."""
    return {"label": "invoice", "confidence": "0.9"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLMServer]:
    fake = FakeLLM(
        responder=sloppy, models=[*DEFAULT_MODELS, JSON_ONLY], json_mode_only=[JSON_ONLY]
    )
    with FakeLLMServer(fake) as running:
        yield running


@pytest.fixture
def fake(server: FakeLLMServer) -> FakeLLM:
    server.fake.reset()
    return server.fake


def stale_settings(settings: Settings, server: FakeLLMServer, **more: Any) -> Settings:
    return settings.model_copy(
        update={
            "openai_base_url": server.openai_base_url,
            "anthropic_base_url": server.anthropic_base_url,
            "ai_catalog": json.dumps(STALE),
            **more,
        }
    )


def gateway_for(settings: Settings, sessions: Any, redis: aioredis.Redis) -> AiGateway:
    return AiGateway(
        providers=build_providers(settings),
        ledger=BudgetLedger(redis),
        cache=AiCache(redis),
        health=ProviderHealth(),
        sessions=sessions,
        timeout_seconds=5,
        catalog=settings.catalog(),
    )


async def new_tenant(sessions: Any) -> str:
    async with sessions() as session:
        tenant = await TenantService(session).create_tenant(f"fo-{uuid.uuid4().hex[:8]}", "premium")
        await session.commit()
    return str(tenant.id)


def classify(tenant: str) -> AiRequest:
    text = f"{INPUT['text']} ref {uuid.uuid4().hex}"  # never a cache hit
    return AiRequest("classify_content", {**INPUT, "text": text}, tenant)


def model_calls(fake: FakeLLM, model: str) -> int:
    return sum(c.model == model for c in fake.calls())


async def test_a_retired_model_fails_over_and_is_marked_unavailable(
    settings: Settings,
    sessions: Any,
    redis: aioredis.Redis,
    server: FakeLLMServer,
    fake: FakeLLM,
) -> None:
    gateway = gateway_for(stale_settings(settings, server), sessions, redis)
    tenant = await new_tenant(sessions)
    failovers = REGISTRY.get_sample_value(
        "wfs_ai_model_failovers_total",
        {"provider": "openai", "model": RETIRED, "kind": "model_not_found"},
    )
    first = await gateway.run(classify(tenant), PREMIUM)
    # Before: a 404 was a bad request and the baseline answered; now the other provider does.
    assert (first.outcome, first.provider, first.model) == ("OK", "anthropic", "claude-sonnet-5-5")
    assert first.output == {"category": "Invoice", "confidence": 0.9}
    assert [(a["model"], a["kind"]) for a in first.attempts] == [(RETIRED, "model_not_found")]
    assert "does not exist" in first.attempts[0]["message"]
    assert gateway.health.unavailable("openai", RETIRED) == "model_not_found"
    labels = {"provider": "openai", "model": RETIRED, "reason": "model_not_found"}
    assert REGISTRY.get_sample_value("wfs_ai_model_unavailable", labels) == 1
    assert (
        REGISTRY.get_sample_value(
            "wfs_ai_model_failovers_total",
            {"provider": "openai", "model": RETIRED, "kind": "model_not_found"},
        )
        == (failovers or 0) + 1
    )

    second = await gateway.run(classify(tenant), PREMIUM)
    assert second.provider == "anthropic"
    assert model_calls(fake, RETIRED) == 1  # skipped, not asked again
    assert [a["kind"] for a in second.attempts] == ["unavailable"]

    async with sessions() as session:
        rows = list(
            await session.scalars(
                select(AiUsage).where(AiUsage.tenant_id == uuid.UUID(tenant)).order_by(AiUsage.id)
            )
        )
    assert [[a["kind"] for a in r.attempts or []] for r in rows] == [
        ["model_not_found"],
        ["unavailable"],
    ]
    assert set(rows[0].attempts[0]) == {"provider", "model", "kind", "message"}  # type: ignore[index]
    await close(gateway)


@pytest.mark.parametrize(("status", "kind"), [(403, "model_forbidden"), (529, "overloaded")])
async def test_forbidden_and_overloaded_models_fail_over(
    settings: Settings,
    sessions: Any,
    redis: aioredis.Redis,
    server: FakeLLMServer,
    fake: FakeLLM,
    status: int,
    kind: str,
) -> None:
    gateway = gateway_for(stale_settings(settings, server), sessions, redis)
    fake.rule(provider="anthropic", status=status)
    tenant = await new_tenant(sessions)
    enterprise = TenantAi(tier="enterprise", enabled=True, budget_usd=Decimal(100), overrides={})
    outcome = await gateway.run(classify(tenant), enterprise)  # claude-opus-5-5 first
    assert (outcome.provider, outcome.model) == ("openai", "gpt-6.2-astra")
    assert [(a["model"], a["kind"]) for a in outcome.attempts] == [("claude-opus-5-5", kind)]
    # Forbidden is about the model (marked); overload is an outage (the breaker counts it).
    marked = gateway.health.unavailable("anthropic", "claude-opus-5-5")
    assert marked == ("model_forbidden" if status == 403 else None)
    assert gateway.health.error_rate("anthropic", "claude-opus-5-5") == (
        0.0 if status == 403 else 1.0
    )
    await close(gateway)


async def test_structured_outputs_turn_a_sloppy_reply_into_a_valid_one(
    settings: Settings,
    sessions: Any,
    redis: aioredis.Redis,
    server: FakeLLMServer,
    fake: FakeLLM,
) -> None:
    tenant = await new_tenant(sessions)
    pro = TenantAi(tier="pro", enabled=True, budget_usd=Decimal(10), overrides={})
    json_mode = stale_settings(
        settings, server, openai_output_mode="json_object", anthropic_output_mode="text"
    )
    loose = gateway_for(json_mode, sessions, redis)
    before = await loose.run(classify(tenant), pro)
    assert (before.fallback_reason, before.model) == ("INVALID_OUTPUT", "gpt-6-luna")
    assert [a["kind"] for a in before.attempts] == ["invalid_output", "invalid_output"]
    assert fake.calls()[-1].body["response_format"] == {"type": "json_object"}

    strict = gateway_for(stale_settings(settings, server), sessions, redis)
    after = await strict.run(classify(tenant), pro)
    assert (after.outcome, after.output) == ("OK", {"category": "Invoice", "confidence": 0.9})
    assert fake.calls()[-1].body["response_format"]["type"] == "json_schema"
    await close(loose)
    await close(strict)


async def test_a_json_mode_only_model_refuses_schemas_and_answers_json_mode(
    server: FakeLLMServer, fake: FakeLLM
) -> None:
    task = TASK_SPECS["summarize"]
    data = {"text": "One. Two. Three."}
    fake.rule(json={"summary": "One."})
    schema = OpenAIProvider("k", server.openai_base_url, max_retries=0, catalog=default_catalog())
    with pytest.raises(ProviderError) as refused:
        await schema.complete(JSON_ONLY, task, data, timeout=5)
    # A fact about the model, not a malformed request: fail over, mark the model.
    assert (refused.value.kind, refused.value.retryable) == ("unsupported_output", True)
    assert refused.value.model_level
    assert "json_schema is not supported" in str(refused.value)
    plain = OpenAIProvider("k", server.openai_base_url, max_retries=0, output_mode="json_object")
    assert (await plain.complete(JSON_ONLY, task, data, timeout=5)).output == {"summary": "One."}
    # Anthropic's structured outputs: output_config.format, honoured by the model.
    claude = AnthropicProvider("k", server.anthropic_base_url, max_retries=0)
    fake.reset()
    answer = await claude.complete(
        "claude-haiku-5-5", TASK_SPECS["classify_content"], INPUT, timeout=5
    )
    assert answer.output == {"category": "Invoice", "confidence": 0.9}
    assert fake.calls()[0].body["output_config"]["format"]["type"] == "json_schema"
    for provider in (schema, plain, claude):
        await provider.aclose()


async def test_a_model_without_structured_outputs_fails_over_and_is_marked(
    settings: Settings,
    sessions: Any,
    redis: aioredis.Redis,
    server: FakeLLMServer,
    fake: FakeLLM,
) -> None:
    # Model A (JSON mode only) answers the json_schema request with a 400; model B answers.
    catalog = {
        "models": {"openai": {JSON_ONLY: {"input": "0", "output": "0"}}},
        "tiers": {"pro": {"default": [f"openai/{JSON_ONLY}", "anthropic/claude-haiku-5-5"]}},
    }
    gateway = gateway_for(
        stale_settings(settings, server, ai_catalog=json.dumps(catalog)), sessions, redis
    )
    tenant = await new_tenant(sessions)
    pro = TenantAi(tier="pro", enabled=True, budget_usd=Decimal(10), overrides={})
    first = await gateway.run(classify(tenant), pro)
    # Before: the 400 went straight to the baseline (PROVIDER_ERROR), nothing marked.
    assert (first.outcome, first.model) == ("OK", "claude-haiku-5-5")
    assert [(a["model"], a["kind"]) for a in first.attempts] == [(JSON_ONLY, "unsupported_output")]
    assert gateway.health.unavailable("openai", JSON_ONLY) == "unsupported_output"
    assert gateway.health.error_rate("openai", JSON_ONLY) == 0.0  # not an outage
    second = await gateway.run(classify(tenant), pro)
    assert second.model == "claude-haiku-5-5"
    assert model_calls(fake, JSON_ONLY) == 1  # skipped, not asked again
    # Any other 400 is about the request: the baseline answers, nothing is marked.
    fake.rule(
        provider="anthropic", status=400, message="messages: text content blocks must be non-empty"
    )
    other = await gateway.run(classify(tenant), TenantAi("pro", True, Decimal(10), {}))
    assert (other.fallback_reason, [a["kind"] for a in other.attempts]) == (
        "PROVIDER_ERROR",
        ["unavailable", "bad_request"],
    )
    assert gateway.health.unavailable("anthropic", "claude-haiku-5-5") is None
    await close(gateway)


async def test_a_call_span_is_costed_at_the_catalogue_s_prices(
    server: FakeLLMServer, fake: FakeLLM
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # An AI_CATALOG override of the price; the shipped price would give another figure.
    override = {"models": {"anthropic": {"claude-haiku-5-5": {"input": "1000", "output": "2000"}}}}
    catalog = load_catalog(json.dumps(override))
    exported = InMemorySpanExporter()
    spans = TracerProvider()  # a local provider: the global one is set once per process
    spans.add_span_processor(SimpleSpanProcessor(exported))
    claude = AnthropicProvider("k", server.anthropic_base_url, max_retries=0)
    provider = TracedProvider(claude, catalog=catalog, tracer=spans.get_tracer("test"))
    fake.rule(json={"summary": "One."}, usage={"input_tokens": 1000, "output_tokens": 500})
    await provider.complete(
        "claude-haiku-5-5", TASK_SPECS["summarize"], {"text": "One. Two."}, timeout=5
    )
    (span,) = exported.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["wfs.ai.cost_usd"] == "2.000000"  # 1000 x 1000 + 500 x 2000 per 1M
    shipped = pricing.cost("anthropic", "claude-haiku-5-5", 1000, 500)
    assert shipped != Decimal("2.000000")  # before: the span said this
    await claude.aclose()


def test_attempt_messages_are_short_and_carry_no_secrets_or_quoted_text() -> None:
    prompt_echo = "'" + "Dear Ann, your invoice for the renovation of 12 Elm Street " * 5 + "'"
    message = sanitize(
        f"Error code: 401 - Incorrect API key provided: sk-proj-abcDEF123456789. \n"
        f"Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.secret and {prompt_echo} " + "x" * 500
    )
    assert "sk-proj" not in message and "eyJhbGci" not in message and "Elm Street" not in message
    assert "[redacted]" in message and "\n" not in message
    assert len(message) <= MAX_MESSAGE_CHARS
    assert sanitize("category 'Billing' is not one of the categories") == (
        "category 'Billing' is not one of the categories"  # short quotes (names) stay
    )


@pytest.mark.parametrize(
    "message",
    [
        # An apostrophe inside the quoted run used to end it: "Dear Ann, it" survived.
        "category 'Dear Ann, it's your invoice for the renovation of 12 Elm Street' is wrong",
        # repr() of text with both quotes escapes the apostrophe: \' ended the run.
        "bad value " + repr('Ann said "pay", it\'s the renovation bill for 12 Elm Street'),
        # JSON escapes the double quotes inside.
        '{"message": "Invalid: \\"Dear Ann\\" is owed the renovation of 12 Elm Street"}',
        # Left unclosed by a cut.
        "unexpected value 'Dear Ann, your invoice for the renovation of 12 Elm Str",
    ],
)
def test_quoted_runs_broken_by_quotes_are_still_removed(message: str) -> None:
    cleaned = sanitize(message)
    assert "Ann" not in cleaned and "Elm" not in cleaned, cleaned
    assert "…" in cleaned


def test_invalid_output_messages_never_quote_the_model_s_answer() -> None:
    echo = "Dear Ann, your invoice for the renovation of 12 Elm Street"
    checks = [
        (TASK_SPECS["classify_content"], INPUT, {"category": echo, "confidence": 0.5}),
        (
            TASK_SPECS["extract_entities"],
            {"text": "Invoice 7 for ACME."},
            {"entities": [{"type": "person", "text": echo}, {"type": echo, "text": "ACME"}]},
        ),
    ]
    for task, data, output in checks:
        with pytest.raises(InvalidOutput) as invalid:
            task.validate(data, output)
        assert "Ann" not in str(invalid.value) and "Elm" not in str(invalid.value)


async def close(gateway: AiGateway) -> None:
    for provider in gateway.providers.values():
        closer = getattr(provider, "aclose", None)
        if closer is not None:
            await closer()
