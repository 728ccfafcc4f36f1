"""Forecasts end to end on a real PostgreSQL: synthetic histories with known answers written
as ai_usage and executions rows, read back through the repository and services.

- costForecast: a tenant's AI spend ramps with a weekday pattern and seeded noise; asked on
  several days of a month, the month-end forecast is within 5% of the month's true total and
  its interval covers it; month-to-date is exact; another tenant's spend on the same days
  never counts; a tenant with too little history gets no forecast and says so.
- capacityPlan: a constructed platform history (executions/day on an exact line, half of
  each day in one hour, one day whose backlog drained in one hour) gives the capacity and the
  run-out day computed by hand.

Both use dates long past (2011-2012), which no other test writes, because capacity counts
every tenant's executions.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert, select

from app.analytics.capacity import CapacityService
from app.analytics.forecast import ForecastService
from app.analytics.forecasting import ForecastMethod
from app.models import AiUsage, Execution, Template, TemplateVersion, Tenant
from app.tenants.service import PlatformPrincipal
from tests.analytics.test_forecasting import WEEK
from tests.conftest import make_tenant

MICRO = Decimal("0.000001")
HOURS = (1, 7, 13, 19)  # each day's spend is written as four calls at these hours


async def tenant_id(sessions: Any, tier: str = "pro") -> uuid.UUID:
    keys = await make_tenant(sessions, tier)
    async with sessions() as s:
        found = await s.scalar(select(Tenant.id).where(Tenant.name == keys.name))
    assert found is not None
    return found


def spend_history(first: date, last: date, seed: int, base: float) -> dict[date, Decimal]:
    """Known daily AI spend from `first` to `last`: base + 2% of base per day, times WEEK,
    with 8% noise; as stored (micro-dollars, four calls a day)."""
    rng, days = random.Random(seed), {}
    mean_week = sum(WEEK) / 7
    for t in range((last - first).days + 1):
        day = first + timedelta(days=t)
        mu = base * (1 + 0.02 * t) * WEEK[day.weekday()] / mean_week
        call = Decimal(max(0.0, mu + rng.gauss(0, 0.08 * mu)) / len(HOURS)).quantize(MICRO)
        days[day] = call * len(HOURS)
    return days


async def write_spend(sessions: Any, tenant: uuid.UUID, days: dict[date, Decimal]) -> None:
    rows = [
        {
            "tenant_id": tenant,
            "task": "generate_text",
            "provider": "openai",
            "model": "gpt-6-luna",
            "cost_usd": total / len(HOURS),
            "outcome": "OK",
            "at": datetime.combine(day, time(hour), UTC),
        }
        for day, total in days.items()
        for hour in HOURS
    ]
    async with sessions() as s:
        await s.execute(insert(AiUsage), rows)
        await s.commit()


def spent(days: dict[date, Decimal], since: datetime, until: datetime) -> Decimal:
    """What the rows of `days` add up to in [since, until)."""
    return sum(
        (
            total / len(HOURS)
            for day, total in days.items()
            for hour in HOURS
            if since <= datetime.combine(day, time(hour), UTC) < until
        ),
        Decimal(0),
    )


async def test_month_end_cost_forecast_backtest(sessions: Any) -> None:
    tenant, stranger, newcomer = [await tenant_id(sessions) for _ in range(3)]
    history = spend_history(date(2012, 3, 1), date(2012, 6, 30), seed=7, base=40.0)
    await write_spend(sessions, tenant, history)
    # A much bigger spender on the same days: never part of the tenant's figures.
    await write_spend(sessions, stranger, {d: v * 10 for d, v in history.items()})
    # A tenant whose first AI calls were a day before it asks.
    await write_spend(sessions, newcomer, {date(2012, 6, 9): Decimal("3.5")})

    for as_of in (
        datetime(2012, 5, 3, 9, 30, tzinfo=UTC),  # early: the month rests on April's weeks
        datetime(2012, 5, 17, 16, 0, tzinfo=UTC),
        datetime(2012, 6, 26, 2, 0, tzinfo=UTC),
    ):
        month_start = datetime(as_of.year, as_of.month, 1, tzinfo=UTC)
        month_end = datetime(2012, as_of.month + 1, 1, tzinfo=UTC)
        truth = spent(history, month_start, month_end)
        async with sessions() as s:
            report = await ForecastService(s).cost_forecast(tenant, as_of)
        assert report.month == as_of.strftime("%Y-%m")
        assert report.month_to_date_usd == spent(history, month_start, as_of)
        assert report.method is ForecastMethod.TREND_WEEKDAY, report
        assert report.history_days == 56
        assert report.forecast_usd is not None and report.low_usd is not None
        assert report.high_usd is not None
        error = abs(report.forecast_usd - truth) / truth
        assert error < Decimal("0.05"), (as_of, report, truth)
        assert report.low_usd <= truth <= report.high_usd, (as_of, report, truth)
        assert report.low_usd >= report.month_to_date_usd

    # History starts at the tenant's first day with spend: 16 days -> trend only.
    async with sessions() as s:
        young = await ForecastService(s).cost_forecast(tenant, datetime(2012, 3, 17, tzinfo=UTC))
        fresh = await ForecastService(s).cost_forecast(newcomer, datetime(2012, 6, 10, tzinfo=UTC))
    assert (young.method, young.history_days) == (ForecastMethod.TREND, 16)
    assert young.forecast_usd is not None
    assert young.month_to_date_usd == spent(
        history, datetime(2012, 3, 1, tzinfo=UTC), datetime(2012, 3, 17, tzinfo=UTC)
    )
    assert (fresh.method, fresh.history_days) == (ForecastMethod.TOO_LITTLE_HISTORY, 1)
    assert fresh.month_to_date_usd == Decimal("3.5")
    assert (fresh.forecast_usd, fresh.low_usd, fresh.high_usd) == (None, None, None)


# The constructed platform history (capacity reads its last 28 days): executions created per
# day on the line 42 + 4t (t = 0 is START), half of each day's in its 14:00 hour (share 0.5),
# each finishing 5 minutes after it was created; on SPIKE_DAY every execution waited and all
# finished within 23:00-24:00.
AS_OF = datetime(2011, 3, 28, tzinfo=UTC)
START = AS_OF.date() - timedelta(days=56)
SPIKE_DAY = 40


def day_executions(t: int) -> list[tuple[datetime, datetime]]:
    """(created_at, finished_at) of day t's executions."""
    day = datetime.combine(START + timedelta(days=t), time(), UTC)
    n = 42 + 4 * t
    if t == SPIKE_DAY:
        created = [day + timedelta(minutes=(23 * 60 * k) // n) for k in range(n)]
        return [(c, day + timedelta(hours=23, seconds=k)) for k, c in enumerate(created)]
    busy = [day + timedelta(hours=14, seconds=10 * k) for k in range(n // 2)]
    other_hours = [h for h in range(24) if h != 14]
    rest = [day + timedelta(hours=other_hours[k % 23], minutes=5, seconds=k) for k in range(n // 2)]
    return [(c, c + timedelta(minutes=5)) for c in busy + rest]


async def write_executions(sessions: Any, tenant: uuid.UUID) -> int:
    async with sessions() as s:
        template_id, version_id = (
            await s.execute(
                select(Template.id, TemplateVersion.id)
                .join(TemplateVersion, TemplateVersion.template_id == Template.id)
                .where(Template.tenant_id.is_(None))
                .limit(1)
            )
        ).one()
        rows = []
        for t in range(56):
            for created, finished in day_executions(t):
                pk = uuid.uuid4()
                rows.append(
                    {
                        "id": pk,
                        "tenant_id": tenant,
                        "template_id": template_id,
                        "template_version_id": version_id,
                        "params": {},
                        "status": "COMPLETED",
                        "workflow_id": f"capacity-{pk}",
                        "created_at": created,
                        "started_at": created,
                        "finished_at": finished,
                        "updated_at": finished,
                    }
                )
        await s.execute(insert(Execution), rows)
        await s.commit()
    return len(rows)


async def test_capacity_plan_on_a_constructed_history(server: str, sessions: Any) -> None:
    await write_executions(sessions, await tenant_id(sessions))
    platform = PlatformPrincipal(key_id=uuid.uuid4(), name="test")
    async with sessions() as s:
        plan = await CapacityService(s).plan(platform, AS_OF, workers=3, horizon_days=90)
        short = await CapacityService(s).plan(platform, AS_OF, workers=3, horizon_days=30)
    spike = datetime.combine(START + timedelta(days=SPIKE_DAY), time(23), UTC)
    assert plan.peak is not None
    assert (plan.peak.at, plan.peak.completions) == (spike, 42 + 4 * SPIKE_DAY)
    assert plan.peak_hour_share == 0.5
    assert plan.daily_capacity == pytest.approx((42 + 4 * SPIKE_DAY) / 0.5)  # 404
    assert (plan.method, plan.history_days, plan.workers) == (ForecastMethod.TREND_WEEKDAY, 28, 3)
    assert len(plan.forecast) == 90 and plan.forecast[0].day == AS_OF.date()
    for day in plan.forecast:  # the exact line, continued
        assert day.expected == pytest.approx(42 + 4 * (day.day - START).days, rel=1e-6)
    # 42 + 4t > 404 from t = 91 on: 35 days after AS_OF (t = 56).
    assert plan.runs_out_on == START + timedelta(days=91)
    assert short.runs_out_on is None and len(short.forecast) == 30
