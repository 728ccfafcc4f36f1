"""Monthly AI budgets: reserve-then-settle in Redis, against a real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from app.ai.budget import (
    KEY_TTL_SECONDS,
    BudgetLedger,
    BudgetNotices,
    Reservation,
    month_bounds,
    month_of,
    month_spend,
)
from app.models.ai_usage import AiUsage
from app.notifications.service import NotificationService
from app.settings import Settings
from app.tenants.service import TenantService

D = Decimal
NOW = datetime(2031, 3, 14, 12, 0, tzinfo=UTC)


@pytest.fixture
def ledger(redis: aioredis.Redis) -> BudgetLedger:
    return BudgetLedger(redis)


def tenant() -> str:
    return str(uuid.uuid4())


async def test_reserve_settle_release_arithmetic(ledger: BudgetLedger) -> None:
    t = tenant()
    r1 = await ledger.reserve(t, D("0.25"), D("1.00"), now=NOW)
    r2 = await ledger.reserve(t, D("0.30"), D("1.00"), now=NOW)
    assert r1 is not None and r2 is not None
    assert (r1.tenant_id, r1.month, r1.amount_usd) == (t, "2031-03", D("0.25"))
    status = await ledger.status(t, D("1.00"), now=NOW)
    assert (status.spent_usd, status.reserved_usd, status.remaining_usd) == (
        0,
        D("0.55"),
        D("0.45"),
    )
    settled = await ledger.settle(r1, D("0.123456"), now=NOW)
    assert (settled.spent_usd, settled.reserved_usd) == (D("0.123456"), D("0.30"))
    assert settled.remaining_usd == D("0.576544")
    assert not settled.crossed_soft_threshold
    await ledger.release(r2)
    status = await ledger.status(t, D("1.00"), now=NOW)
    assert (status.spent_usd, status.reserved_usd) == (D("0.123456"), 0)
    assert status.remaining_usd == D("0.876544")
    assert status.limit_usd == D("1.00") and status.month == "2031-03"
    # Actual cost above the reservation is charged in full.
    r3 = await ledger.reserve(t, D("0.01"), D("1.00"), now=NOW)
    assert r3 is not None
    assert (await ledger.settle(r3, D("0.5"), now=NOW)).spent_usd == D("0.623456")


async def test_amounts_round_to_micro_dollars_safely(ledger: BudgetLedger) -> None:
    t = tenant()
    r = await ledger.reserve(t, D("0.0000001"), D("1"), now=NOW)
    assert r is not None and r.amount_usd == D("0.000001")  # reservations round up
    refused = await ledger.reserve(t, D("0.999999"), D("0.9999999"), now=NOW)
    assert refused is None  # the limit rounds down: 0.999999 + 0.000001 > 0.999999


async def test_reserve_is_refused_at_the_limit(ledger: BudgetLedger) -> None:
    t = tenant()
    assert await ledger.reserve(t, D("0.60"), D("1.00"), now=NOW)
    assert await ledger.reserve(t, D("0.40"), D("1.00"), now=NOW)  # exactly the limit
    assert await ledger.reserve(t, D("0.000001"), D("1.00"), now=NOW) is None
    status = await ledger.status(t, D("1.00"), now=NOW)
    assert (status.reserved_usd, status.remaining_usd) == (D("1.00"), 0)
    # A lower limit than what is already held: remaining never goes negative.
    assert (await ledger.status(t, D("0.50"), now=NOW)).remaining_usd == 0


async def test_zero_and_unlimited_limits(ledger: BudgetLedger) -> None:
    t = tenant()
    assert await ledger.reserve(t, D("0"), D("0"), now=NOW) is None
    assert await ledger.reserve(t, D("0.01"), D("0"), now=NOW) is None
    r = await ledger.reserve(t, D("1000"), D("-1"), now=NOW)
    assert r is not None
    status = await ledger.settle(r, D("1234.5"), now=NOW)
    assert status.remaining_usd == D("Infinity") and not status.crossed_soft_threshold
    with pytest.raises(ValueError):
        await ledger.reserve(t, D("-1"), D("1"), now=NOW)


async def test_concurrent_reservations_cannot_overspend(settings: Settings) -> None:
    # Five clients (five workers) race 50 reservations of $0.10 against a $1.00 limit.
    assert settings.redis_url
    clients = [aioredis.from_url(settings.redis_url) for _ in range(5)]
    ledgers = [BudgetLedger(c) for c in clients]
    t, limit = tenant(), D("1.00")
    results = await asyncio.gather(
        *(ledgers[i % 5].reserve(t, D("0.10"), limit) for i in range(50))
    )
    granted = [r for r in results if r is not None]
    assert len(granted) == 10
    assert (await ledgers[0].status(t, limit)).reserved_usd == limit
    statuses = await asyncio.gather(
        *(ledgers[i % 5].settle(r, r.amount_usd) for i, r in enumerate(granted))
    )
    assert max(s.spent_usd + s.reserved_usd for s in statuses) <= limit
    final = await ledgers[0].status(t, limit)
    assert (final.spent_usd, final.reserved_usd, final.remaining_usd) == (limit, 0, 0)
    assert sum(s.crossed_soft_threshold for s in statuses) == 1
    assert await ledgers[0].reserve(t, D("0.10"), limit) is None
    for client in clients:
        await client.aclose()


async def test_soft_threshold_crossed_exactly_once(ledger: BudgetLedger) -> None:
    t, limit = tenant(), D("1.00")
    before = REGISTRY.get_sample_value("wfs_ai_budget_soft_threshold_total") or 0.0
    crossed = []
    for actual in (D("0.50"), D("0.29"), D("0.01"), D("0.10"), D("0.20")):
        r = await ledger.reserve(t, D("0.01"), limit, now=NOW)
        assert r is not None
        crossed.append((await ledger.settle(r, actual, now=NOW)).crossed_soft_threshold)
    # 0.50, 0.79, 0.80 (crossed: >= 80%), 0.90, 1.10
    assert crossed == [False, False, True, False, False]
    assert REGISTRY.get_sample_value("wfs_ai_budget_soft_threshold_total") == before + 1
    # A new month can cross again.
    r = await ledger.reserve(t, D("0.01"), limit, now=NOW + timedelta(days=31))
    assert r is not None and r.month == "2031-04"
    assert (await ledger.settle(r, D("0.90"), now=NOW + timedelta(days=31))).crossed_soft_threshold


async def test_expired_reservations_are_reclaimed(ledger: BudgetLedger) -> None:
    t, limit = tenant(), D("1.00")
    stale = await ledger.reserve(t, D("0.90"), limit, now=NOW)
    assert stale is not None
    assert await ledger.reserve(t, D("0.20"), limit, now=NOW + timedelta(minutes=14)) is None
    later = NOW + timedelta(minutes=15, seconds=1)
    fresh = await ledger.reserve(t, D("0.20"), limit, now=later)
    assert fresh is not None
    status = await ledger.status(t, limit, now=later)
    assert (status.reserved_usd, status.remaining_usd) == (D("0.20"), D("0.80"))
    # A worker that comes back late still pays for its call.
    assert (await ledger.settle(stale, D("0.05"), now=later)).spent_usd == D("0.05")


async def test_month_rollover(ledger: BudgetLedger, redis: aioredis.Redis) -> None:
    t, limit = tenant(), D("1.00")
    jan = datetime(2031, 1, 31, 23, 59, 59, tzinfo=UTC)
    feb = datetime(2031, 2, 1, 0, 0, 0, tzinfo=UTC)
    r = await ledger.reserve(t, D("0.90"), limit, now=jan)
    assert r is not None
    await ledger.settle(r, D("0.90"), now=jan)
    assert await ledger.reserve(t, D("0.20"), limit, now=jan) is None
    feb_res = await ledger.reserve(t, D("0.20"), limit, now=feb)
    assert feb_res is not None and feb_res.month == "2031-02"
    assert (await ledger.status(t, limit, now=feb)).spent_usd == 0
    assert (await ledger.status(t, limit, now=jan)).spent_usd == D("0.90")
    # Naive datetimes are UTC; other zones are converted.
    assert month_of(datetime(2031, 1, 31, 23, 30)) == "2031-01"
    assert month_of(datetime(2031, 2, 1, 0, 30, tzinfo=UTC).astimezone()) == "2031-02"
    assert month_bounds(datetime(2031, 12, 5, tzinfo=UTC)) == (
        datetime(2031, 12, 1, tzinfo=UTC),
        datetime(2032, 1, 1, tzinfo=UTC),
    )
    spent_key = f"wfs:budget:{{{t}:2031-01}}:spent"
    assert KEY_TTL_SECONDS - 60 < await redis.ttl(spent_key) <= KEY_TTL_SECONDS


async def test_reconcile_from_ai_usage(ledger: BudgetLedger, sessions) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        row = await TenantService(session).create_tenant(f"t-budget-{uuid.uuid4().hex[:8]}", "pro")
        start, end = month_bounds(NOW)
        for cost, at in (
            (D("0.250000"), start),
            (D("0.125001"), NOW),
            (D("1.000000"), start - timedelta(microseconds=1)),  # last month
            (D("2.000000"), end),  # next month
        ):
            session.add(
                AiUsage(
                    tenant_id=row.id,
                    task="summarize",
                    provider="openai",
                    model="gpt-6-luna",
                    cost_usd=cost,
                    outcome="OK",
                    at=at,
                )
            )
        await session.commit()
    async with sessions() as session:
        assert await month_spend(session, row.id, start, end) == D("0.375001")
        assert await month_spend(session, str(row.id), start) == D("2.375001")
        assert await month_spend(session, uuid.uuid4(), start) == 0
        spent = await month_spend(session, row.id, start, end)
    t = str(row.id)
    r = await ledger.reserve(t, D("0.10"), D("5"), now=NOW)
    assert r is not None
    await ledger.settle(r, D("0.05"), now=NOW)  # Redis drifted from the database
    live = await ledger.reserve(t, D("0.20"), D("5"), now=NOW)
    await ledger.reconcile(t, spent, now=NOW)
    status = await ledger.status(t, D("5"), now=NOW)
    assert (status.spent_usd, status.reserved_usd) == (D("0.375001"), D("0.20"))
    assert isinstance(live, Reservation)


async def test_exhaustion_is_told_when_spend_reaches_the_limit_not_before(
    redis: aioredis.Redis,
    sessions,  # type: ignore[no-untyped-def]
) -> None:
    """A refused big estimate, or reservations filling the budget, is not exhaustion: before,
    it used up the month's one BUDGET_EXHAUSTED and the real one was never told."""
    async with sessions() as session:
        row = await TenantService(session).create_tenant(f"t-out-{uuid.uuid4().hex[:8]}", "pro")
        await session.commit()
    t, limit = str(row.id), D("1.00")
    ledger = BudgetLedger(redis, notices=BudgetNotices(sessions, redis))

    async def told() -> list[tuple[str, str]]:
        async with sessions() as session:
            items = await NotificationService(session).read_after(row.id, 0)
        return [(n.type, n.data["spentUsd"]) for n in items if n.type == "BUDGET_EXHAUSTED"]

    assert await ledger.reserve(t, D("5.00"), limit, now=NOW) is None  # one big estimate
    held = await ledger.reserve(t, D("0.70"), limit, now=NOW)
    assert held is not None
    assert await ledger.reserve(t, D("0.40"), limit, now=NOW) is None  # reservations fill it
    assert await told() == []
    await ledger.settle(held, D("0.30"), now=NOW)  # the estimate was high: $0.70 is left
    last = await ledger.reserve(t, D("0.70"), limit, now=NOW)
    assert last is not None
    await ledger.settle(last, D("0.70"), now=NOW)  # spent = limit
    assert await ledger.reserve(t, D("0.01"), limit, now=NOW) is None
    assert await told() == [("BUDGET_EXHAUSTED", "1.000000")]
    # Spend found in PostgreSQL (reconcile) past a limit: a refused reservation tells it.
    await ledger.reconcile(t, D("3.00"), now=NOW + timedelta(days=31))
    assert await ledger.reserve(t, D("0.01"), limit, now=NOW + timedelta(days=31)) is None
    assert await ledger.reserve(t, D("0.01"), limit, now=NOW + timedelta(days=31)) is None
    assert await told() == [("BUDGET_EXHAUSTED", "1.000000"), ("BUDGET_EXHAUSTED", "3.000000")]
