"""aiRecommendations: usage histories built in a real PostgreSQL (ai_usage rows through the
models layer, or real gateway calls against the fake LLM server) where each kind of
recommendation must and must not fire, its figures against hand computation, tenant isolation,
bad windows; and over HTTP, applying a suggestion with the mutation it names retires it."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy import select

from app.ai.budget import BudgetLedger
from app.ai.cache import AiCache, input_digest
from app.ai.contracts import AiRequest
from app.ai.fake_llm import FakeLLMServer
from app.ai.gateway import AiGateway, TenantAi
from app.ai.health import ProviderHealth
from app.ai.input_hash import deployment_key, fingerprint
from app.ai.providers import build_providers
from app.ai.repository import AiRepository
from app.analytics.recommendation_stats import holm_adjusted, non_inferiority, wilson
from app.analytics.recommendations import RecommendationReport, RecommendationService
from app.analytics.recommendations_repository import RecommendationRepository
from app.errors import ValidationFailed
from app.models import AiUsage
from app.settings import Settings
from app.tenants.repository import TenantRepository
from tests.conftest import make_tenant
from tests.support import GraphQLClient

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
T0 = datetime(2026, 10, 5, tzinfo=UTC)
OCTOBER = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


async def tenant_id(sessions: Any, tier: str) -> tuple[uuid.UUID, Any]:
    keys = await make_tenant(sessions, tier)
    async with sessions() as s:
        tenant = await TenantRepository(s).by_name(keys.name)
    assert tenant is not None
    return tenant.id, keys


def usage(tenant: uuid.UUID, at: datetime, **fields: Any) -> AiUsage:
    """One ai_usage row: a paid, validated gpt-6.2-sol summarize call unless `fields` say
    otherwise."""
    row = {
        "task": "summarize",
        "provider": "openai",
        "model": "gpt-6.2-sol",
        "cost_usd": Decimal("0.010000"),
        "outcome": "OK",
        "cached": False,
        **fields,
    }
    return AiUsage(tenant_id=tenant, at=at, **row)


async def insert(sessions: Any, rows: list[AiUsage]) -> None:
    """Rows with a fingerprint one by one through the repository, oldest first (it measures
    each repeat's gap); the rest in one batch (the rollup trigger sums either)."""
    async with sessions() as s:
        s.add_all([r for r in rows if r.input_hash is None])
        repo = AiRepository(s)
        for row in sorted((r for r in rows if r.input_hash is not None), key=lambda r: r.at):
            added = await repo.add_usage(row)
            assert added.repeat_gap_seconds is None or added.repeat_gap_seconds >= 0
        await s.commit()


def calls(
    tenant: uuid.UUID, n: int, start: datetime, passed: int | None = None, **fields: Any
) -> list[AiUsage]:
    """n calls a minute apart from `start`; the first `passed` validated, the rest
    INVALID_OUTPUT (the model paid, the baseline answered)."""
    passed = n if passed is None else passed
    invalid = {"outcome": "FALLBACK", "fallback_reason": "INVALID_OUTPUT"}
    return [
        usage(tenant, start + timedelta(minutes=i), **fields, **({} if i < passed else invalid))
        for i in range(n)
    ]


async def recommend(
    sessions: Any, settings: Settings, tenant: uuid.UUID, window: tuple[datetime, datetime]
) -> RecommendationReport:
    async with sessions() as s:
        return await RecommendationService(s).recommend(tenant, *window, settings)


def kinds(report: RecommendationReport) -> list[tuple[str, str | None]]:
    return [(r.kind, r.task) for r in report.recommendations]


async def test_cheaper_model_when_its_pass_rate_matched(sessions: Any, settings: Settings) -> None:
    tenant, _ = await tenant_id(sessions, "premium")
    mini = {"model": "gpt-6-luna", "cost_usd": Decimal("0.001000")}
    rows = [
        # summarize: gpt-6.2-sol 380 of 400 valid at 0.01, gpt-6-luna 290 of 300 at 0.001
        *calls(tenant, 400, T0, passed=380),
        *calls(tenant, 300, T0 + timedelta(hours=7), passed=290, **mini),
        # classify_content: the cheaper model's 29 calls are one short of the minimum
        *calls(tenant, 40, T0, task="classify_content"),
        *calls(tenant, 29, T0, task="classify_content", **mini),
        # extract_entities: 200/200 against 192/200: within 5 points, but a significant drop
        *calls(tenant, 200, T0, task="extract_entities"),
        *calls(tenant, 200, T0, passed=192, task="extract_entities", **mini),
        # generate_text: 40/40 against 27/30, a drop of 10 points
        *calls(tenant, 40, T0, task="generate_text"),
        *calls(tenant, 30, T0, passed=27, task="generate_text", **mini),
        # personalize_content: the most used model is the cheap one; gpt-6.2-sol is no saving
        *calls(tenant, 40, T0, task="personalize_content", **mini),
        *calls(tenant, 35, T0, task="personalize_content"),
        # cache hits and baseline answers are no model's record
        *calls(tenant, 50, T0, task="summarize", cached=True, outcome="CACHED", **mini),
        *calls(tenant, 50, T0, provider="baseline", model="baseline", fallback_reason="TIER"),
    ]
    await insert(sessions, rows)
    report = await recommend(sessions, settings, tenant, OCTOBER)
    assert kinds(report) == [("CHEAPER_MODEL", "summarize")]
    (rec,) = report.recommendations
    basis = rec.cheaper_model
    assert basis is not None
    current, cheaper = basis.current, basis.cheaper
    assert (current.model, current.calls, current.passed) == ("gpt-6.2-sol", 400, 380)
    assert (cheaper.model, cheaper.calls, cheaper.passed) == ("gpt-6-luna", 300, 290)
    assert (current.avg_cost_usd, cheaper.avg_cost_usd) == (Decimal("0.01"), Decimal("0.001"))
    assert (round(cheaper.wilson_low, 4), round(cheaper.wilson_high, 4)) == (0.9397, 0.9818)
    # pooled p = 670/700; z = (0.95 - 0.96667) / sqrt(p (1 - p) (1/400 + 1/300)) = -1.0774
    assert round(basis.z, 4) == -1.0774
    # Agresti-Caffo: 291/302 - 381/402 + 0.05 over sqrt(sum r (1 - r) / (n + 2)) = 4.2539
    assert round(basis.non_inferiority_z, 4) == 4.2539
    # Three pairs tested (summarize, extract_entities, generate_text): the smallest p x 3
    assert basis.comparisons == 3 and basis.correction == "HOLM"
    assert basis.adjusted_p_value == pytest.approx(3 * basis.p_value)
    assert basis.p_value == pytest.approx(1.0505e-5, rel=1e-3)
    # (0.01 - 0.001) USD a call over gpt-6.2-sol's 400 calls
    assert rec.savings_usd == Decimal("3.600000")
    assert rec.apply_with == "updateAiSettings"
    assert rec.apply_value == {
        "input": {
            "overrides": {
                "summarize": [
                    {"provider": "openai", "model": "gpt-6-luna"},
                    {"provider": "openai", "model": "gpt-6.2-sol"},
                    {"provider": "anthropic", "model": "claude-sonnet-5-5"},
                ]
            }
        }
    }
    # Outside the window, nothing.
    later = (OCTOBER[1], OCTOBER[1] + timedelta(days=30))
    assert (await recommend(sessions, settings, tenant, later)).recommendations == []


async def test_cheaper_model_corrects_for_the_comparisons_of_the_request(
    sessions: Any, settings: Settings
) -> None:
    """classify_content's cheaper model alone (one comparison) passes the non-inferiority
    test (p = 0.029); among three comparisons Holm's correction doubles its p (the second
    smallest of three) to 0.059 and it is not suggested, while summarize's p stays far below."""
    mini = {"model": "gpt-6-luna", "cost_usd": Decimal("0.001000")}
    borderline = [
        # 95/100 against 96/100: one-sided non-inferiority (5 points) p = 0.0293
        ("classify_content", 100, 95, 100, 96),
    ]
    others = [
        ("summarize", 400, 380, 300, 290),  # p = 1.05e-5
        ("generate_text", 40, 40, 30, 27),  # 10 points worse: p = 0.79
    ]

    async def history(pairs: list[tuple[str, int, int, int, int]]) -> RecommendationReport:
        tenant, _ = await tenant_id(sessions, "premium")
        rows = []
        for task, n1, passed1, n2, passed2 in pairs:
            rows += calls(tenant, n1, T0, passed=passed1, task=task)
            rows += calls(tenant, n2, T0 + timedelta(hours=8), passed=passed2, task=task, **mini)
        await insert(sessions, rows)
        return await recommend(sessions, settings, tenant, OCTOBER)

    alone = await history(borderline)
    family = await history(borderline + others)
    assert kinds(alone) == [("CHEAPER_MODEL", "classify_content")]
    assert kinds(family) == [("CHEAPER_MODEL", "summarize")]
    basis = alone.recommendations[0].cheaper_model
    assert basis is not None and basis.comparisons == 1
    assert basis.adjusted_p_value == basis.p_value == pytest.approx(0.02929, rel=1e-3)
    basis = family.recommendations[0].cheaper_model
    assert basis is not None and basis.comparisons == 3
    assert basis.adjusted_p_value == pytest.approx(3 * 1.0505e-5, rel=1e-3)
    assert "Holm's correction over the 3 model comparisons" in family.recommendations[0].summary


def test_holm_adjusted_p_values_and_wilson_intervals() -> None:
    # Holm: sorted p 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, each at least the one before
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.9, 0.6]) == [1.0, 1.0] and holm_adjusted([]) == []
    # Wilson 95%: 29/30 -> (0.8333, 0.9941); 38/40 -> (0.8350, 0.9862) (published tables)
    assert [round(x, 4) for x in wilson(29, 30)] == [0.8333, 0.9941]
    assert [round(x, 4) for x in wilson(38, 40)] == [0.8350, 0.9862]
    # Rates of 1 keep a variance (Agresti-Caffo): equal perfect records are non-inferior
    assert non_inferiority((400, 400), (400, 400), 0.05).p_value < 1e-10


async def test_cache_ttl_from_repeats_the_ttl_in_force_missed(
    sessions: Any, settings: Settings
) -> None:
    tenant, _ = await tenant_id(sessions, "premium")
    other, _ = await tenant_id(sessions, "premium")
    rows: list[AiUsage] = []
    # summarize (built-in TTL 24 h): input i is paid at T0 + i min, then again 30 h later
    # (i < 23) or 10 days later (i >= 23): 25 repeats the 24 h TTL missed.
    for i in range(25):
        first = T0 + timedelta(minutes=i)
        gap = timedelta(hours=30) if i < 23 else timedelta(days=10)
        rows += [
            usage(tenant, first, input_hash=f"s{i}", cost_usd=Decimal("0.020000")),
            usage(tenant, first + gap, input_hash=f"s{i}", cost_usd=Decimal("0.030000")),
        ]
    for i in range(10):  # repeats within the TTL in force (the cache was evicted): not its fault
        rows += calls(tenant, 2, T0, input_hash=f"w{i}")
    rows += [  # equal fingerprints under another model, and hits: no repeats
        usage(tenant, T0 + timedelta(hours=40), input_hash="s0", model="gpt-6-luna"),
        usage(tenant, T0 + timedelta(hours=50), input_hash="s1", cached=True, outcome="CACHED"),
    ]
    # classify_content (built-in 7 d; AI_CACHE_TTLS turns it off below): 19 repeats an hour
    # apart, one short of the minimum; optimize_timing (10 min): 20 repeats 2 h apart.
    rows += calls(tenant, 20, T0, task="classify_content", input_hash="c")
    for i in range(21):
        rows.append(
            usage(tenant, T0 + timedelta(hours=2 * i), task="optimize_timing", input_hash="o")
        )
    # The other tenant: the same fingerprints and gaps; never counted for `tenant`.
    rows += [usage(other, r.at, task=r.task, input_hash=r.input_hash) for r in rows]
    await insert(sessions, rows)

    off = settings.model_copy(update={"ai_cache_ttls": {"classify_content": 0}})
    report = await recommend(sessions, off, tenant, OCTOBER)
    assert kinds(report) == [("ENABLE_CACHE", "optimize_timing"), ("ENABLE_CACHE", "summarize")]
    timing, summarize = report.recommendations
    # summarize: 23 of 25 (>= 90%) within 2 d, the smallest ladder rung covering them
    assert summarize.cache is not None
    assert (
        summarize.cache.current_ttl_seconds,
        summarize.cache.suggested_ttl_seconds,
        summarize.cache.missed_repeats,
        summarize.cache.covered_repeats,
    ) == (86400, 2 * 86400, 25, 23)
    assert summarize.savings_usd == Decimal("0.690000")  # 23 repeats at 0.03
    assert (summarize.apply_with, summarize.apply_value) == ("AI_CACHE_TTLS", {"summarize": 172800})
    # optimize_timing: 20 repeats 2 h apart -> 6 h; 20 x 0.01
    assert timing.cache is not None
    assert (timing.cache.current_ttl_seconds, timing.cache.suggested_ttl_seconds) == (600, 21600)
    assert (timing.cache.missed_repeats, timing.savings_usd) == (20, Decimal("0.200000"))

    # One more classify repeat reaches the minimum: suggested with the cache off (TTL 0).
    await insert(
        sessions,
        [usage(tenant, T0 + timedelta(minutes=20), task="classify_content", input_hash="c")],
    )
    report = await recommend(sessions, off, tenant, OCTOBER)
    classify = next(r for r in report.recommendations if r.task == "classify_content")
    assert classify.cache is not None
    assert (classify.cache.current_ttl_seconds, classify.cache.suggested_ttl_seconds) == (0, 300)
    assert (classify.cache.missed_repeats, classify.savings_usd) == (20, Decimal("0.200000"))
    # With the built-in 7 d TTL those repeats were covered: nothing to suggest for classify.
    built_in = await recommend(sessions, settings, tenant, OCTOBER)
    assert ("ENABLE_CACHE", "classify_content") not in kinds(built_in)

    # From 01:00 on the 5th: that partial day (11 optimize_timing repeats) is read from the
    # rows, the next day (9 more) from the rollup; classify's repeats are all before 01:00.
    later = await recommend(sessions, off, tenant, (T0 + timedelta(hours=1), OCTOBER[1]))
    assert [(r.task, r.cache.missed_repeats if r.cache else 0) for r in later.recommendations] == [
        ("optimize_timing", 20),
        ("summarize", 25),
    ]
    assert later.recommendations[0].savings_usd == Decimal("0.200000")
    # A TTL that is no bucket bound is answered from the rows: 5,000 s misses the 2 h repeats,
    # 7,300 s covers them.
    for ttl, expected in ((5000, [("optimize_timing", 20, 21600)]), (7300, [])):
        odd = settings.model_copy(update={"ai_cache_ttls": {"optimize_timing": ttl}})
        found = (await recommend(sessions, odd, tenant, OCTOBER)).recommendations
        assert [
            (r.task, r.cache.missed_repeats, r.cache.suggested_ttl_seconds)
            for r in found
            if r.cache and r.task == "optimize_timing"
        ] == expected


async def test_budget_that_would_have_covered_the_refused_calls(
    sessions: Any, settings: Settings
) -> None:
    tenant, _ = await tenant_id(sessions, "pro")  # default budget 10 USD, at most 100
    refused = {"provider": "baseline", "model": "baseline", "cost_usd": Decimal(0)}
    refused |= {"outcome": "FALLBACK", "fallback_reason": "BUDGET"}
    october = [
        *calls(tenant, 100, T0, cost_usd=Decimal("0.100000"), model="gpt-6-luna"),  # 10.00
        *calls(tenant, 12, T0 + timedelta(days=20), **refused),
        # a task never paid for in the window: counted, not priced
        *calls(tenant, 3, T0 + timedelta(days=21), task="generate_text", **refused),
    ]
    september = [  # the same spend and 9 refused calls (10.90 needed): below the minimum
        *calls(tenant, 100, datetime(2026, 9, 2, tzinfo=UTC), cost_usd=Decimal("0.100000")),
        *calls(tenant, 9, datetime(2026, 9, 20, tzinfo=UTC), **refused),
    ]
    await insert(sessions, october + september)
    september_window = (datetime(2026, 9, 1, tzinfo=UTC), OCTOBER[0])
    assert (await recommend(sessions, settings, tenant, september_window)).recommendations == []

    report = await recommend(sessions, settings, tenant, OCTOBER)
    (rec,) = report.recommendations
    assert (rec.kind, rec.task, rec.apply_with) == ("BUDGET", None, "setBudget")
    budget = rec.budget
    assert budget is not None
    assert (budget.month, budget.budget_fallbacks, budget.unpriced_fallbacks) == ("2026-10", 15, 3)
    assert budget.fallbacks_by_task == {"generate_text": 3, "summarize": 12}
    # 10.00 spent + 12 x 0.10 (summarize's average) = 11.20 -> 12 USD
    assert (budget.spent_usd, budget.refused_demand_usd, budget.needed_usd) == (
        Decimal("10.000000"),
        Decimal("1.200000"),
        Decimal("11.200000"),
    )
    assert rec.apply_value == {"limitUsd": "12"}
    assert (budget.current_limit_usd, budget.tier_max_usd, budget.capped_at_tier_max) == (
        Decimal(10),
        Decimal(100),
        False,
    )
    # A window from mid-October (after every paid call): the month still counts whole (the
    # budget did), and its refused calls are priced at that month's average: the same figures.
    mid = await recommend(
        sessions, settings, tenant, (datetime(2026, 10, 15, tzinfo=UTC), OCTOBER[1])
    )
    assert [r.budget for r in mid.recommendations] == [budget]

    # 90 USD more spent in October: 100 + 12 x 100/109 = 111.01 needed; the tier allows 100.
    await insert(sessions, calls(tenant, 9, T0, cost_usd=Decimal("10.000000")))
    capped = (await recommend(sessions, settings, tenant, OCTOBER)).recommendations[0]
    assert capped.budget is not None and capped.budget.capped_at_tier_max
    assert capped.apply_value == {"limitUsd": "100"}


async def test_bad_windows_and_an_empty_history(sessions: Any, settings: Settings) -> None:
    tenant, _ = await tenant_id(sessions, "premium")
    assert (await recommend(sessions, settings, tenant, OCTOBER)).recommendations == []
    for window in ((OCTOBER[1], OCTOBER[0]), (T0, T0), (T0, T0 + timedelta(days=367))):
        with pytest.raises(ValidationFailed):
            await recommend(sessions, settings, tenant, window)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    assert settings.redis_url
    client = aioredis.from_url(settings.redis_url)
    yield client
    await client.aclose()


async def test_gateway_records_tenant_keyed_fingerprints_that_feed_the_cache_suggestion(
    sessions: Any, settings: Settings, redis: aioredis.Redis, fake_llm: FakeLLMServer
) -> None:
    """Real calls with the cache off for classify_content: each repeat is paid again and
    recorded with the same fingerprint; equal inputs of two tenants get different ones."""
    clock = [T0]
    gateway = AiGateway(
        providers=build_providers(settings),
        ledger=BudgetLedger(redis),
        cache=AiCache(redis, ttls={"classify_content": 0}),
        health=ProviderHealth(),
        sessions=sessions,
        timeout_seconds=5,
        clock=lambda: clock[0],
        input_hash_key=deployment_key(settings),
    )
    tenant, _ = await tenant_id(sessions, "premium")
    other, _ = await tenant_id(sessions, "premium")
    marker = uuid.uuid4().hex
    fake_llm.fake.rule(
        contains=marker,
        json={"category": "invoice", "confidence": 0.9},
        usage={"input_tokens": 1000, "output_tokens": 20},
    )
    premium = TenantAi(tier="premium", enabled=True, budget_usd=Decimal("100"), overrides={})
    text = f"Invoice {marker}: total due $40."

    def request(who: uuid.UUID, spacing: str = " ") -> AiRequest:
        return AiRequest(
            "classify_content",
            {"text": text.replace(" ", spacing), "categories": ["invoice", "contract"]},
            str(who),
        )

    for i in range(21):  # 20 repeats, a minute apart; every other one with extra spaces
        clock[0] = T0 + timedelta(minutes=i)
        outcome = await gateway.run(request(tenant, "  " if i % 2 else " "), premium)
        assert (outcome.outcome, outcome.cached) == ("OK", False)
    await gateway.run(request(other), premium)
    off = TenantAi(tier="premium", enabled=False, budget_usd=Decimal("100"), overrides={})
    await gateway.run(request(tenant), off)  # decided before the input is read: no fingerprint

    async with sessions() as s:
        rows = list(
            await s.scalars(
                select(AiUsage).where(AiUsage.tenant_id.in_([tenant, other])).order_by(AiUsage.id)
            )
        )
    # Each paid call after the first is a repeat a minute later (spacing does not matter).
    gaps = [r.repeat_gap_seconds for r in rows if r.tenant_id == tenant]
    assert gaps == [None] + [60] * 20 + [None]
    mine = [r.input_hash for r in rows if r.tenant_id == tenant]
    theirs = [r.input_hash for r in rows if r.tenant_id == other]
    assert len(set(mine[:21])) == 1 and mine[21] is None
    assert len(theirs) == 1 and theirs[0] != mine[0]
    digest = input_digest({"text": text, "categories": ["invoice", "contract"]})
    assert mine[0] is not None and len(mine[0]) == 64
    assert mine[0] not in (digest, hashlib.sha256(text.encode()).hexdigest())

    cost = rows[0].cost_usd
    off_settings = settings.model_copy(update={"ai_cache_ttls": {"classify_content": 0}})
    report = await recommend(sessions, off_settings, tenant, OCTOBER)
    (rec,) = report.recommendations
    assert (rec.kind, rec.task, rec.apply_value) == (
        "ENABLE_CACHE",
        "classify_content",
        {"classify_content": 300},
    )
    assert rec.savings_usd == 20 * cost
    assert (await recommend(sessions, off_settings, other, OCTOBER)).recommendations == []


async def q(client: GraphQLClient, name: str, variables: dict[str, Any]) -> dict[str, Any]:
    return await client.data((OPS / f"{name}.graphql").read_text(), variables)


async def test_over_graphql_applying_a_suggestion_retires_it(server: str, sessions: Any) -> None:
    tenant, keys = await tenant_id(sessions, "premium")
    refused = {"provider": "baseline", "model": "baseline", "cost_usd": Decimal(0)}
    refused |= {"outcome": "FALLBACK", "fallback_reason": "BUDGET"}
    mini = {"model": "gpt-6-luna", "cost_usd": Decimal("0.001000")}
    await insert(
        sessions,
        [
            *calls(tenant, 400, T0, passed=380, cost_usd=Decimal("0.250000")),  # 100 USD
            *calls(tenant, 300, T0, passed=290, **mini),
            *calls(tenant, 20, T0 + timedelta(days=1), **refused),
        ],
    )
    window = {"from": OCTOBER[0].isoformat(), "to": OCTOBER[1].isoformat()}
    admin = GraphQLClient(server, keys.admin)
    haiku = {"classify_content": [{"provider": "anthropic", "model": "claude-haiku-5-5"}]}
    stored = await q(admin, "UpdateAiSettings", {"input": {"overrides": haiku}})
    assert stored["updateAiSettings"]["overrides"] == haiku
    viewer = GraphQLClient(server, keys.viewer)
    report = (await q(viewer, "AiRecommendations", window))["aiRecommendations"]
    assert (report["from"], report["to"]) == (
        "2026-10-01T00:00:00+00:00",
        "2026-11-01T00:00:00+00:00",
    )
    by_kind = {r["kind"]: r for r in report["recommendations"]}
    assert set(by_kind) == {"CHEAPER_MODEL", "BUDGET"}
    cheaper = by_kind["CHEAPER_MODEL"]
    assert cheaper["cheaperModel"]["cheaper"]["model"] == "gpt-6-luna"
    assert cheaper["estimatedSavingsUsd"] == "99.600000"  # (0.25 - 0.001) x 400
    assert cheaper["cheaperModel"]["correction"] == "HOLM"
    assert cheaper["cheaperModel"]["comparisons"] == 1
    assert cheaper["cheaperModel"]["adjustedPValue"] <= cheaper["cheaperModel"]["familyAlpha"]
    budget = by_kind["BUDGET"]
    # 100.3 spent + 20 x (100.3 / 700) = 103.165714 -> 104 USD
    assert budget["budget"]["neededUsd"] == "103.165714"
    assert budget["applyValue"] == {"limitUsd": "104"} and budget["estimatedSavingsUsd"] is None

    assert (cheaper["applyWith"], budget["applyWith"]) == ("updateAiSettings", "setBudget")
    applied = await q(admin, "UpdateAiSettings", cheaper["applyValue"])
    # The other task's override stays (updateAiSettings replaces the whole set).
    assert set(applied["updateAiSettings"]["overrides"]) == {"classify_content", "summarize"}
    assert applied["updateAiSettings"]["overrides"]["classify_content"] == haiku["classify_content"]
    applied = await q(admin, "SetBudget", budget["applyValue"])
    assert Decimal(applied["setBudget"]["limitUsd"]) == 104
    report = (await q(viewer, "AiRecommendations", window))["aiRecommendations"]
    assert report["recommendations"] == []

    # Another tenant sees none of it; bad windows are VALIDATION_FAILED.
    stranger = await make_tenant(sessions, "premium")
    theirs = await q(GraphQLClient(server, stranger.viewer), "AiRecommendations", window)
    assert theirs["aiRecommendations"]["recommendations"] == []
    backwards = {"from": window["to"], "to": window["from"]}
    body = await viewer.raw((OPS / "AiRecommendations.graphql").read_text(), backwards)
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED"
    anonymous = await GraphQLClient(server, None).raw(
        (OPS / "AiRecommendations.graphql").read_text(), window
    )
    assert anonymous["data"] is None and anonymous["errors"]


async def test_window_edges_come_from_the_rows_whole_days_from_the_rollup(sessions: Any) -> None:
    """Calls on the window's partial first and last days and on a whole day between, and just
    outside it: each counted once, whichever way it is read."""
    tenant, _ = await tenant_id(sessions, "premium")
    start, end = datetime(2026, 10, 4, 22, tzinfo=UTC), datetime(2026, 10, 7, 8, tzinfo=UTC)
    inside = [start, datetime(2026, 10, 4, 23, tzinfo=UTC), T0 + timedelta(hours=12)]
    inside += [datetime(2026, 10, 7, 7, 59, tzinfo=UTC)]
    outside = [start - timedelta(seconds=1), end, datetime(2026, 10, 7, 9, tzinfo=UTC)]
    refused = {"provider": "baseline", "model": "baseline", "cost_usd": Decimal(0)}
    refused |= {"outcome": "FALLBACK", "fallback_reason": "BUDGET"}
    await insert(
        sessions,
        [
            *(usage(tenant, at) for at in inside + outside),
            usage(tenant, inside[1], outcome="FALLBACK", fallback_reason="INVALID_OUTPUT"),
            *(usage(tenant, at, **refused) for at in (inside[0], inside[2], outside[1])),
        ],
    )
    async with sessions() as s:
        repo = RecommendationRepository(s)
        stats = await repo.window_stats(tenant, start, end)
        within_a_day = await repo.window_stats(tenant, start, start + timedelta(hours=2))
        totals = await repo.month_totals(tenant, [date(2026, 10, 1)])
    figures = {
        (x.provider, x.passed, x.invalid, x.paid, x.paid_cost_usd, x.budget_fallbacks)
        for x in stats
    }
    assert {x.month for x in stats} == {date(2026, 10, 1)}
    assert figures == {
        ("openai", 4, 1, 5, Decimal("0.050000"), 0),
        ("baseline", 0, 0, 0, Decimal(0), 2),
    }
    # 22:00 and 23:00, and the invalid one at 23:00
    assert {(x.provider, x.paid, x.budget_fallbacks) for x in within_a_day} == {
        ("openai", 3, 0),
        ("baseline", 0, 1),
    }
    # The month whole: 4 + 3 gpt-6.2-sol calls and the invalid one, at 0.01 each.
    assert [(t.task, t.cost_usd, t.paid) for t in totals] == [("summarize", Decimal("0.080000"), 8)]


def test_settings_refuse_unknown_tasks_and_keys_separate_deployments(settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown AI tasks"):
        Settings(_env_file=None, ai_cache_ttls={"summarise": 3600})  # type: ignore[call-arg]
    digest = input_digest({"text": "the same input"})
    own = settings.model_copy(update={"ai_input_hash_key": SecretStr("k" * 32)})
    other = settings.model_copy(update={"ai_input_hash_key": SecretStr("j" * 32)})
    tenant = str(uuid.uuid4())
    assert fingerprint(deployment_key(own), tenant, digest) == fingerprint(
        deployment_key(own), tenant, digest
    )
    assert fingerprint(deployment_key(own), tenant, digest) != fingerprint(
        deployment_key(other), tenant, digest
    )
    # Unset: derived from the file-URL secret, and not that secret itself.
    assert deployment_key(settings) not in (deployment_key(own), b"", None)
    # Neither set and no writable state dir (a pod's read-only file system): no fingerprints,
    # no failure.
    unwritable = settings.model_copy(update={"state_dir": Path("/dev/null/wfs")})
    assert deployment_key(unwritable) is None
