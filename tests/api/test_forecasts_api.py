"""Forecast and planning fields over HTTP on the real API: costForecast (month to date exact,
the forecast of a steady history exact, another tenant's spend never counted),
Template.costEstimate (too few runs is explicit; percentiles of recorded runs; other tenants'
runs only with enough tenants), tenantComparison (ranked by each figure, whole days from the
rollups and a partial day from the rows, paged, storage measured from the tenants' files;
tenant keys refused) and capacityPlan (platform only)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update

from app.ai.budget import month_bounds
from app.analytics.forecast import ForecastService, coarse_runs
from app.analytics.rollup_repository import RollupRepository
from app.models import AiUsage, Execution, ExecutionRollup, Template, TemplateVersion, Tenant
from app.models.analytics import ALL_TEMPLATES
from app.settings import Settings
from app.steps.storage import charged
from app.tenants.platform import PlatformKeys
from tests.api.test_execution_stats import refresh
from tests.api.test_query_cost import counting
from tests.conftest import TenantKeys, make_tenant
from tests.support import GraphQLClient
from tests.workers.test_template_graph import publish

OPS = Path(__file__).resolve().parents[2] / "graphql" / "operations"
COST_FORECAST, COST_ESTIMATE, COMPARISON, CAPACITY = (
    (OPS / f"{name}.graphql").read_text()
    for name in ("CostForecast", "TemplateCostEstimate", "TenantComparison", "CapacityPlan")
)
PRIVATE = {
    "name": "estimate-private",
    "title": "Private to its owner",
    "steps": [{"id": "noop", "activity": "data.transform", "input": {"data": {}, "ops": []}}],
}


async def tenant_row(sessions: Any, keys: TenantKeys) -> uuid.UUID:
    async with sessions() as s:
        found = await s.scalar(select(Tenant.id).where(Tenant.name == keys.name))
    assert found is not None
    return found


async def spend(sessions: Any, tenant: uuid.UUID, calls: list[tuple[datetime, str]]) -> None:
    rows = [
        {
            "tenant_id": tenant,
            "task": "summarize",
            "provider": "openai",
            "model": "gpt-6-luna",
            "cost_usd": Decimal(cost),
            "outcome": "OK",
            "at": at,
        }
        for at, cost in calls
    ]
    async with sessions() as s:
        await s.execute(insert(AiUsage), rows)
        await s.commit()


async def runs(
    sessions: Any,
    tenant: uuid.UUID,
    template: str | None,
    done: list[tuple[datetime, float, str]],
    costs: list[str] | None = None,
    tier: str | None = None,
) -> None:
    """Executions of `template` (a platform one when None): (created, seconds, status) each,
    with one AI call of costs[i] when given, recording `tier` (None: as before 0019)."""
    async with sessions() as s:
        query = select(Template.id, TemplateVersion.id).join(
            TemplateVersion, TemplateVersion.template_id == Template.id
        )
        query = query.where(
            Template.tenant_id.is_(None) if template is None else Template.name == template
        )
        template_id, version_id = (await s.execute(query.limit(1))).one()
        ids = [uuid.uuid4() for _ in done]
        await s.execute(
            insert(Execution),
            [
                {
                    "id": pk,
                    "tenant_id": tenant,
                    "template_id": template_id,
                    "template_version_id": version_id,
                    "params": {},
                    "status": status,
                    "tier": tier,
                    "workflow_id": f"forecast-{pk}",
                    "created_at": created,
                    "started_at": created,
                    "finished_at": created + timedelta(seconds=seconds),
                    "updated_at": created + timedelta(seconds=seconds),
                }
                for pk, (created, seconds, status) in zip(ids, done, strict=True)
            ],
        )
        if costs is not None:
            await s.execute(
                insert(AiUsage),
                [
                    {
                        "tenant_id": tenant,
                        "execution_id": pk,
                        "task": "summarize",
                        "provider": "openai",
                        "model": "gpt-6.2-sol",
                        "cost_usd": Decimal(cost),
                        "outcome": "OK",
                        "at": created,
                    }
                    for pk, (created, _, _), cost in zip(ids, done, costs, strict=True)
                ],
            )
        await s.commit()


async def platform_client(server: str, sessions: Any) -> GraphQLClient:
    async with sessions() as session:
        _, secret = await PlatformKeys(session).create(f"ops-{uuid.uuid4().hex[:6]}")
        await session.commit()
    return GraphQLClient(server, secret)


async def clear_of_midnight() -> datetime:
    """Now, at least a minute before the next UTC midnight (waiting past it if need be), so a
    test that reads "today" twice reads the same day."""
    now = datetime.now(UTC)
    left = datetime.combine(now.date() + timedelta(days=1), time(), UTC) - now
    if left < timedelta(minutes=1):
        await asyncio.sleep(left.total_seconds() + 1)
        now = datetime.now(UTC)
    return now


def percentile_cont(values: list[float], q: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    ordered = sorted(values)
    at = q * (len(ordered) - 1)
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


async def test_cost_forecast_of_a_steady_tenant(server: str, sessions: Any) -> None:
    keys, other = await make_tenant(sessions, "pro"), await make_tenant(sessions, "pro")
    tenant = await tenant_row(sessions, keys)
    now = await clear_of_midnight()
    today = now.date()
    # 30 whole days at 2 USD a day (at noon), and today's calls before now.
    daily = [
        (datetime.combine(today - timedelta(days=d), time(12), UTC), "2") for d in range(1, 31)
    ]
    midnight = datetime.combine(today, time(), UTC)
    early = [(midnight + (now - midnight) / k, "0.25") for k in (2, 4)]
    await spend(sessions, tenant, daily + early)
    await spend(
        sessions, await tenant_row(sessions, other), [(at, "50") for at, _ in daily + early]
    )

    answer = (await GraphQLClient(server, keys.viewer).data(COST_FORECAST))["costForecast"]
    as_of = datetime.fromisoformat(answer["asOf"])
    start, end = month_bounds(as_of)
    so_far = sum((Decimal(c) for at, c in daily + early if start <= at < as_of), Decimal(0))
    assert answer["month"] == as_of.strftime("%Y-%m")
    assert Decimal(answer["monthToDateUsd"]) == so_far
    assert (answer["method"], answer["historyDays"]) == ("TREND_WEEKDAY", 30)
    rest_of_today = (
        1 - (as_of - datetime.combine(as_of.date(), time(), UTC)).total_seconds() / 86400
    )
    later_days = (end.date() - as_of.date()).days - 1
    expected = float(so_far) + 2 * (rest_of_today + later_days)
    assert abs(float(answer["forecastUsd"]) - expected) < 1e-4, answer
    # A noise-free history leaves no spread.
    assert abs(float(answer["high"]) - float(answer["low"])) < 1e-4, answer


async def refresh_estimates(sessions: Any) -> None:
    """The cost estimates' step of a rollup refresh alone (the days of other tests' runs are
    not rebuilt), under the refresh's lock as the schedule takes it."""
    for _ in range(100):
        async with sessions() as s:
            rollup = RollupRepository(s)
            if await rollup.lock():
                now = datetime.now(UTC)
                rolled_until = await rollup.complete_until() or now.date()
                await ForecastService(s).refresh_cost_estimates(now, rolled_until)
                await s.commit()
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the rollup stayed locked")


async def test_cost_estimate_from_recorded_runs(server: str, sessions: Any) -> None:
    owner = await make_tenant(sessions, "premium")
    name = await publish(sessions, owner, PRIVATE)
    client = GraphQLClient(server, owner.viewer)
    owner_id = await tenant_row(sessions, owner)
    # Runs of today (UTC): a day the rollup has not closed, so each refresh finds them.
    midnight = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    now = max(datetime.now(UTC) - timedelta(hours=1), midnight)

    def at(i: int) -> tuple[datetime, float, str]:
        return (now + timedelta(seconds=i), 5.0, "COMPLETED")

    async def estimate(tier: str | None = None) -> dict[str, Any]:
        """The estimate once recomputed (today's runs: no rollup day needed)."""
        await refresh_estimates(sessions)
        found = await client.data(COST_ESTIMATE, {"name": name, "tier": tier})
        answer = dict(found["template"]["costEstimate"])
        assert answer.pop("asOf") is not None, answer
        return answer

    # What the rollup schedule runs computes the estimates, as of its start.
    done = await refresh(sessions)
    found = await client.data(COST_ESTIMATE, {"name": name, "tier": None})
    assert datetime.fromisoformat(found["template"]["costEstimate"]["asOf"]) == done.started
    empty = await estimate()
    assert empty == {"tier": "PREMIUM", "p50Usd": None, "p95Usd": None, "basedOnRuns": 0}
    own = ["0.010000", "0.020000", "0.030000"]
    await runs(sessions, owner_id, name, [at(i) for i in range(3)], own)
    # A failed run and a run without AI calls: only completed runs count, at their cost.
    await runs(sessions, owner_id, name, [(now, 3.0, "FAILED")], ["9"])
    await runs(sessions, owner_id, name, [at(5)])
    own.append("0")
    too_few = await estimate()
    assert too_few == {"tier": "PREMIUM", "p50Usd": None, "p95Usd": None, "basedOnRuns": 4}
    await runs(sessions, owner_id, name, [at(6)], ["0.500000"])
    own.append("0.500000")

    def expected(costs: list[str], runs: int) -> dict[str, Any]:
        values = [float(c) for c in costs]
        return {
            "tier": "PREMIUM",
            "p50Usd": f"{percentile_cont(values, 0.5):.6f}",
            "p95Usd": f"{percentile_cont(values, 0.95):.6f}",
            "basedOnRuns": runs,
        }

    assert await estimate() == expected(own, 5)
    assert await estimate("PRO") == {
        "tier": "PRO",
        "p50Usd": None,
        "p95Usd": None,
        "basedOnRuns": 0,
    }
    # Two other premium tenants: the caller is not the third (basedOnRuns minus its own 5
    # would be their exact count), so only its own runs count.
    others = [await tenant_row(sessions, await make_tenant(sessions, "premium")) for _ in "abc"]
    await runs(sessions, others[0], name, [at(10), at(11)], ["1.000000", "1.000000"])
    await runs(sessions, others[1], name, [at(12)], ["2.000000"])
    assert await estimate() == expected(own, 5)
    # A third other tenant: every run counts, and basedOnRuns is rounded down to 10s (11 runs;
    # 11 - 5 would be the others' exact count).
    await runs(sessions, others[2], name, [at(i) for i in (13, 14, 15)], ["3.000000"] * 3)
    crowd = own + ["1.000000", "1.000000", "2.000000"] + ["3.000000"] * 3
    assert await estimate() == expected(crowd, 10)
    # One of the others holding more than half of their runs (6 of 10) would mostly describe
    # that one: only the caller's runs again.
    await runs(sessions, others[0], name, [at(i) for i in range(16, 20)], ["1.000000"] * 4)
    assert await estimate() == expected(own, 5)
    # Three pro tenants: the PRO estimate is theirs (rounded count), the PREMIUM one unmoved.
    for _ in "abc":
        pro = await tenant_row(sessions, await make_tenant(sessions, "pro"))
        await runs(sessions, pro, name, [at(i) for i in range(20, 24)], ["7.000000"] * 4)
    assert await estimate("PRO") == {**expected(["7"] * 12, 10), "tier": "PRO"}
    assert await estimate() == expected(own, 5)


async def test_cost_estimate_counts_runs_at_the_tier_they_recorded(
    server: str, sessions: Any
) -> None:
    """A premium tenant's runs that recorded the pro tier (it was pro then) count for PRO;
    its runs that recorded none count at its tier now."""
    owner = await make_tenant(sessions, "premium")
    name = await publish(sessions, owner, PRIVATE)
    client = GraphQLClient(server, owner.viewer)
    owner_id = await tenant_row(sessions, owner)
    midnight = datetime.combine(datetime.now(UTC).date(), time(), UTC)
    now = max(datetime.now(UTC) - timedelta(hours=1), midnight)
    done = [(now + timedelta(seconds=i), 5.0, "COMPLETED") for i in range(5)]
    await runs(sessions, owner_id, name, done, ["1.000000"] * 5, tier="pro")
    await runs(sessions, owner_id, name, done, ["2.000000"] * 5)

    async def estimate(tier: str) -> dict[str, Any]:
        found = await client.data(COST_ESTIMATE, {"name": name, "tier": tier})
        return dict(found["template"]["costEstimate"])

    await refresh_estimates(sessions)
    pro, premium = await estimate("PRO"), await estimate("PREMIUM")
    assert (pro["basedOnRuns"], pro["p50Usd"], pro["p95Usd"]) == (5, "1.000000", "1.000000")
    assert (premium["basedOnRuns"], premium["p50Usd"]) == (5, "2.000000"), premium


def test_coarse_run_counts() -> None:
    assert [coarse_runs(n) for n in (0, 9, 10, 11, 99, 100, 199, 1000)] == [
        *(0, 0, 10, 10, 90, 100, 100, 1000)
    ]


WINDOW = {"from": "2010-06-01T00:00:00Z", "to": "2010-06-08T00:00:00Z"}
DAY = datetime(2010, 6, 3, tzinfo=UTC)


async def test_tenant_comparison_ranks_tenants(
    server: str, sessions: Any, settings: Settings
) -> None:
    a, b, c, outside = [
        await make_tenant(sessions, tier) for tier in ("pro", "premium", "free", "pro")
    ]
    a_id, b_id, c_id, outside_id = [await tenant_row(sessions, k) for k in (a, b, c, outside)]
    await runs(
        sessions,
        a_id,
        None,
        [(DAY + timedelta(hours=i), 10.0 + i, "COMPLETED") for i in range(5)]
        + [(DAY, 60.0, "FAILED")],
    )
    await runs(
        sessions, b_id, None, [(DAY + timedelta(hours=i), 100.0, "COMPLETED") for i in range(3)]
    )
    await spend(sessions, a_id, [(DAY, "1.5")])
    await spend(sessions, b_id, [(DAY, "7.25"), (DAY - timedelta(days=10), "100")])
    await spend(sessions, c_id, [(DAY, "0.5"), (DAY + timedelta(hours=5), "0.25")])
    await runs(sessions, outside_id, None, [(DAY + timedelta(days=30), 1.0, "COMPLETED")] * 9)
    # Whole days are read from the daily rollup: these rows are written now (a refresh rolls
    # up again the days of executions changed since the last one), then rolled up.
    async with sessions() as s:
        await s.execute(
            update(Execution)
            .where(Execution.tenant_id.in_([a_id, b_id, outside_id]))
            .values(updated_at=func.now())
        )
        await s.commit()
    await refresh(sessions)
    async with sessions() as s:
        rolled = await s.scalar(
            select(func.sum(ExecutionRollup.runs)).where(
                ExecutionRollup.tenant_id == a_id,
                ExecutionRollup.day == DAY.date(),
                ExecutionRollup.template_id == ALL_TEMPLATES,
            )
        )
    assert rolled == 6
    (settings.files_root / str(b_id)).mkdir(parents=True, exist_ok=True)
    (settings.files_root / str(b_id) / "report.bin").write_bytes(b"x" * 100_000)
    (settings.files_root / str(c_id) / "media").mkdir(parents=True, exist_ok=True)
    for name in ("one.bin", "two.bin"):
        (settings.files_root / str(c_id) / "media" / name).write_bytes(b"y" * 300_000)

    platform = await platform_client(server, sessions)

    async def ranking(order_by: str, **more: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        found = await platform.data(COMPARISON, {**WINDOW, "orderBy": order_by, **more})
        page = found["tenantComparison"]
        assert page["orderBy"] == order_by
        return [e["node"] for e in page["ranking"]["edges"]], page["ranking"]["pageInfo"]

    rows, _ = await ranking("EXECUTIONS")
    assert [(r["rank"], r["name"]) for r in rows] == [(1, a.name), (2, b.name), (3, c.name)]
    by_name = {r["name"]: r for r in rows}
    assert by_name[a.name] | {"storageMeasuredAt": None} == {
        "rank": 1,
        "tenantId": by_name[a.name]["tenantId"],
        "name": a.name,
        "tier": "PRO",
        "executions": 6,
        "completed": 5,
        "successRate": 5 / 6,
        "aiSpendUsd": "1.500000",
        "storageBytes": 0.0,
        "storageMeasuredAt": None,
        # From duration buckets of ratio 1.1 (as executionStats): within 5% of the exact one.
        "p95DurationSeconds": pytest.approx(
            percentile_cont([10, 11, 12, 13, 14, 60], 0.95), rel=0.05
        ),
    }
    assert by_name[b.name]["aiSpendUsd"] == "7.250000"  # its spend before the window is not
    assert by_name[c.name]["aiSpendUsd"] == "0.750000"  # whole days: from ai_usage_daily
    assert by_name[b.name]["storageBytes"] == charged(100_000)
    # The folder counts one block, as the quota counts it.
    assert by_name[c.name]["storageBytes"] == 4096 + 2 * charged(300_000)
    assert by_name[c.name]["storageMeasuredAt"] is not None
    assert (by_name[c.name]["successRate"], by_name[c.name]["p95DurationSeconds"]) == (None, None)

    orders = {
        "SUCCESS_RATE": [b.name, a.name, c.name],
        "AI_SPEND": [b.name, a.name, c.name],
        "STORAGE": [c.name, b.name, a.name],
        "P95_DURATION": [b.name, a.name, c.name],
    }
    for order_by, names in orders.items():
        assert [r["name"] for r in (await ranking(order_by))[0]] == names, order_by

    # A window starting within a day: that day's part from the rows (a's runs from 02:00,
    # b's one, c's spend at 05:00; the spends at midnight are before it), the later days
    # from the rollups.
    partial = {**WINDOW, "from": (DAY + timedelta(minutes=90)).isoformat()}
    found = await platform.data(COMPARISON, {**partial, "orderBy": "EXECUTIONS"})
    edge = [e["node"] for e in found["tenantComparison"]["ranking"]["edges"]]
    assert [(r["name"], r["executions"], r["completed"], r["aiSpendUsd"]) for r in edge] == [
        (a.name, 3, 3, "0.000000"),
        (b.name, 1, 1, "0.000000"),
        (c.name, 0, 0, "0.250000"),
    ]
    assert edge[0]["p95DurationSeconds"] == pytest.approx(
        percentile_cont([12, 13, 14], 0.95), rel=0.05
    )

    # Paged: two, then the rest after the last cursor, ranks continuing.
    head, info = await ranking("STORAGE", first=2)
    assert [r["rank"] for r in head] == [1, 2] and info["hasNextPage"]
    tail, info = await ranking("STORAGE", first=2, after=info["endCursor"])
    assert [(r["rank"], r["name"]) for r in tail] == [(3, a.name)] and not info["hasNextPage"]

    # Tenant keys, admins too, are refused; bad arguments are typed errors.
    for key in (a.admin, a.viewer):
        body = await GraphQLClient(server, key).raw(COMPARISON, WINDOW)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
        body = await GraphQLClient(server, key).raw(CAPACITY, {})
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
    for bad in (
        {"from": WINDOW["to"], "to": WINDOW["from"]},
        {"from": "2010-01-01T00:00:00Z", "to": "2011-06-01T00:00:00Z"},
        {**WINDOW, "after": "bm9wZQ"},
        {**WINDOW, "first": 101},
    ):
        body = await platform.raw(COMPARISON, bad)
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", (bad, body)


async def test_capacity_plan_for_the_platform(server: str, sessions: Any) -> None:
    # Executions on the 5 days before today, so the platform has history whatever else the
    # session wrote (the exact figures are tests/analytics/test_forecast_backtest.py's).
    tenant = await tenant_row(sessions, await make_tenant(sessions, "pro"))
    midnight = datetime.combine((await clear_of_midnight()).date(), time(), UTC)
    await runs(
        sessions,
        tenant,
        None,
        [
            (midnight - timedelta(days=d, hours=h), 30.0, "COMPLETED")
            for d in range(1, 6)
            for h in range(1, 9)
        ],
    )
    platform = await platform_client(server, sessions)
    plan = (await platform.data(CAPACITY, {"horizonDays": 7}))["capacityPlan"]
    assert plan["workers"] is not None and plan["workers"] >= 1  # this test process's worker
    assert plan["method"] != "TOO_LITTLE_HISTORY" and plan["historyDays"] >= 5, plan
    days = [day["day"] for day in plan["forecast"]]
    assert days == [(midnight + timedelta(days=i)).date().isoformat() for i in range(7)]
    for day in plan["forecast"]:
        assert 0 <= day["low"] <= day["executions"] <= day["high"], day
    assert plan["peakHourlyCompletions"] >= 1 and plan["peakHourAt"] is not None
    assert 0 < plan["peakHourShare"] <= 1, plan
    if plan["dailyCapacity"] is not None:
        ratio = plan["peakHourlyCompletions"] / plan["peakHourShare"]
        assert abs(plan["dailyCapacity"] - ratio) < 1e-6
    for horizon in (0, 366):
        body = await platform.raw(CAPACITY, {"horizonDays": horizon})
        assert body["errors"][0]["extensions"]["code"] == "VALIDATION_FAILED", body


ESTIMATES_PAGE = """query($first: Int) { templates(first: $first) { edges { node {
  name costEstimate { basedOnRuns } pro: costEstimate(tier: PRO) { tier basedOnRuns } } } } }"""


async def test_a_page_of_cost_estimates_costs_one_statement(server: str, sessions: Any) -> None:
    client = GraphQLClient(server, (await make_tenant(sessions, "premium")).viewer)
    await client.data("{ viewer { role } }")  # warm up: first use of a key writes last_used_at
    for first in (2, 6):
        with counting() as statements:
            page = await client.data(ESTIMATES_PAGE, {"first": first})
        nodes = [e["node"] for e in page["templates"]["edges"]]
        assert len(nodes) == first and all(n["pro"]["tier"] == "PRO" for n in nodes)
        estimates = [s for s in statements if "template_cost_estimates" in s]
        assert len(estimates) == 1, estimates  # PREMIUM (the default) and PRO together
