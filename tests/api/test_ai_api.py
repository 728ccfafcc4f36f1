"""The AI layer end to end: the same document-processing template gives a free tenant baseline
results and a premium tenant model results (through the fake LLM server), and the GraphQL
views of usage, cost, budget, providers and settings report them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from app.ai.attempts import record as attempt_record
from app.ai.attempts import stored
from app.ai.contracts import ModelChoice
from app.ai.model_check import CHECK_KEY, ModelCheck, publish_check
from app.ai.repository import AiRepository
from app.models import AiUsage
from app.settings import Settings
from app.tenants.repository import TenantRepository
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.workers.test_template_graph import run

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
TEXT = (
    "Invoice INV-7 from ACME. Total due: $1,250.00 by 2026-12-01. "
    "Contact billing@acme.example for questions. The invoice covers October."
)


async def q(client: GraphQLClient, name: str, variables: dict[str, Any] | None = None) -> Any:
    return await client.data((OPS / f"{name}.graphql").read_text(), variables)


async def test_same_template_baseline_for_free_models_for_premium(
    server: str, sessions: Any, settings: Settings
) -> None:
    results = {}
    for tier in ("free", "premium"):
        keys: TenantKeys = await make_tenant(sessions, tier)
        client = GraphQLClient(server, keys.admin)
        _, execution = await run(client, server, keys.admin, "document-processing", {"text": TEXT})
        assert execution["status"] == "COMPLETED", execution["error"]
        results[tier] = (client, execution)

    free = results["free"][1]["result"]
    assert free["category"] == "invoice"
    assert {a["provider"] for a in free["ai"].values()} == {"baseline"}
    assert {a["fallback_reason"] for a in free["ai"].values()} == {"TIER"}

    client, execution = results["premium"]
    premium = execution["result"]
    assert premium["category"] == "invoice"
    assert {(a["provider"], a["model"]) for a in premium["ai"].values()} == {
        ("openai", "gpt-6.2-sol")
    }
    assert all(a["fallback_reason"] is None for a in premium["ai"].values())

    detail = (await q(client, "ExecutionAi", {"id": execution["id"]}))["execution"]
    assert sorted(u["task"] for u in detail["aiUsage"]) == [
        "classify_content",
        "extract_entities",
        "summarize",
    ]
    assert float(detail["aiCostUsd"]) > 0
    assert (
        str(sum(float(u["costUsd"]) for u in detail["aiUsage"]))[:6]
        == str(float(detail["aiCostUsd"]))[:6]
    )

    usage = (await q(client, "AiUsage", {"first": 10}))["aiUsage"]["edges"]
    assert len(usage) == 3 and all(e["node"]["execution"]["id"] == execution["id"] for e in usage)
    now = datetime.now(UTC)
    span = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    by_task = (await q(client, "AiUsageSummary", {**span, "groupBy": "TASK"}))["aiUsageSummary"]
    assert {b["key"]: b["calls"] for b in by_task} == {
        "classify_content": 1,
        "extract_entities": 1,
        "summarize": 1,
    }
    by_template = (await q(client, "AiUsageSummary", {**span, "groupBy": "TEMPLATE"}))[
        "aiUsageSummary"
    ]
    assert [(b["key"], b["calls"], b["fallbackRate"]) for b in by_template] == [
        ("document-processing", 3, 0.0)
    ]

    overview = await q(client, "AiOverview")
    budget = overview["viewer"]["budget"]
    assert budget["limitUsd"] == "100" or float(budget["limitUsd"]) == 100.0
    assert float(budget["spentUsd"]) == float(detail["aiCostUsd"])
    assert overview["aiSettings"]["enabled"] is True
    assert {"tier": "free", "task": "summarize", "models": []} in overview["aiSettings"][
        "tierTable"
    ]


async def test_budget_and_settings_mutations(server: str, sessions: Any) -> None:
    keys = await make_tenant(sessions, "pro")
    admin, viewer = GraphQLClient(server, keys.admin), GraphQLClient(server, keys.viewer)
    denied = (await q(viewer, "SetBudget", {"limitUsd": "5"}))["setBudget"]
    assert denied["__typename"] == "ForbiddenError"
    bad = (await q(admin, "SetBudget", {"limitUsd": "-1"}))["setBudget"]
    assert bad["__typename"] == "ValidationError"
    ok = (await q(admin, "SetBudget", {"limitUsd": "5.25"}))["setBudget"]
    assert ok["__typename"] == "Budget" and float(ok["limitUsd"]) == 5.25
    back = (await q(admin, "SetBudget", {"limitUsd": None}))["setBudget"]
    assert float(back["limitUsd"]) == 10.0  # the pro tier default

    wrong = (
        await q(
            admin,
            "UpdateAiSettings",
            {
                "input": {
                    "overrides": {
                        "summarize": [{"provider": "openai", "model": "gpt-9"}],
                        "dance": [],
                    }
                }
            },
        )
    )["updateAiSettings"]
    assert wrong["__typename"] == "ValidationError"
    assert {p["path"] for p in wrong["problems"]} == {"$.summarize[0].model", "$.dance"}
    done = await q(
        admin,
        "UpdateAiSettings",
        {
            "input": {
                "enabled": False,
                "overrides": {
                    "summarize": [{"provider": "anthropic", "model": "claude-haiku-5-5"}]
                },
            }
        },
    )
    assert done["updateAiSettings"]["enabled"] is False
    assert done["updateAiSettings"]["overrides"]["summarize"][0]["provider"] == "anthropic"


async def test_ai_providers_reports_what_the_ai_worker_probes(server: str, sessions: Any) -> None:
    keys = await make_tenant(sessions, "pro")
    client = GraphQLClient(server, keys.admin)
    async with asyncio.timeout(30):
        while True:
            providers = (await q(client, "AiOverview"))["aiProviders"]
            if providers:
                break
            await asyncio.sleep(0.5)
    names = {(p["name"], p["model"]) for p in providers}
    assert ("openai", "gpt-6-luna") in names and ("anthropic", "claude-opus-5-5") in names
    assert all(p["breakerState"] == "CLOSED" and p["status"] == "UP" for p in providers)


async def test_usage_attempts_catalogue_and_model_check_are_reported(
    server: str, sessions: Any, settings: Settings
) -> None:
    keys = await make_tenant(sessions, "premium")
    client = GraphQLClient(server, keys.viewer)
    async with sessions() as session:
        tenant = await TenantRepository(session).by_name(keys.name)
        assert tenant is not None
        attempts = [
            attempt_record(ModelChoice("openai", "gpt-6.2-sol"), "model_not_found", "gone"),
            attempt_record(ModelChoice("anthropic", "claude-sonnet-5-5"), "invalid_output", "x"),
        ]
        await AiRepository(session).add_usage(
            AiUsage(
                tenant_id=tenant.id,
                task="summarize",
                provider="anthropic",
                model="claude-sonnet-5-5",
                fallback_reason="INVALID_OUTPUT",
                outcome="FALLBACK",
                attempts=stored(attempts),
            )
        )
        await session.commit()
    (edge,) = (await q(client, "AiUsage", {"first": 5}))["aiUsage"]["edges"]
    assert edge["node"]["attempts"] == [
        {
            "provider": "openai",
            "model": "gpt-6.2-sol",
            "kind": "model_not_found",
            "message": "gone",
        },
        {
            "provider": "anthropic",
            "model": "claude-sonnet-5-5",
            "kind": "invalid_output",
            "message": "x",
        },
    ]

    overview = await q(client, "AiOverview")
    catalog = overview["aiSettings"]["catalog"]
    assert catalog["asOf"] == settings.catalog().as_of
    luna = next(m for m in catalog["models"] if m["model"] == "gpt-6-luna")
    assert (luna["inputPerMtokUsd"], luna["cachedInputPerMtokUsd"]) == ("0.10", "0.01")

    # The AI worker checked the catalogue against the fake's model lists at start.
    async with asyncio.timeout(30):
        while True:
            rows = (await q(client, "AiOverview"))["aiProviders"]
            if all(r["listed"] is not None for r in rows if r["configured"]):
                break
            await asyncio.sleep(0.5)
    configured = {(r["name"], r["model"]) for r in rows if r["configured"]}
    assert {(c.provider, c.model) for c in settings.catalog().configured_models()} == configured
    assert all(r["listed"] for r in rows if r["configured"])

    redis = aioredis.from_url(settings.redis_url or "")
    saved = await redis.get(CHECK_KEY)
    assert saved is not None
    try:  # as if OpenAI had retired gpt-6-luna since (the worker checks again in 15 minutes)
        check = ModelCheck.from_json(saved)
        for provider in check.providers:
            if provider.provider == "openai":
                provider.missing = ["gpt-6-luna"]
        await publish_check(redis, check)
        rows = (await q(client, "AiOverview"))["aiProviders"]
        luna_row = next(r for r in rows if r["model"] == "gpt-6-luna")
        assert (luna_row["listed"], luna_row["status"]) == (False, "UP")
        async with httpx.AsyncClient(base_url=server) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 200  # reported, never failing readiness
        assert ready.json()["detail"]["ai_models"]["missing"] == ["openai/gpt-6-luna"]
    finally:
        await redis.set(CHECK_KEY, saved)
        await redis.aclose()
