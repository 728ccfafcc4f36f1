"""A tenant's AI spend forecasts: the month-end total (`costForecast`) and what one run of a
template costs at a tier (`Template.costEstimate`).

Month end: month-to-date is the exact sum of the tenant's ai_usage rows from the first of the
UTC month up to now. The rest of the month is forecast (app/analytics/forecasting.py) from the
whole UTC days of the last HISTORY_DAYS before today, starting at the tenant's first day with
usage in that window (days before it are not its history; days after it without usage are
zeros). The rest is today's remaining share (by the clock) plus every later day of the month.
So early in a month the forecast still rests on weeks of history (the previous month's), and a
new tenant gets the method its few days allow (`method`), or none below 3 days of history.

Cost per run: the 50th/95th percentile of the AI cost of COMPLETED runs of the template (all
versions) in the last ESTIMATE_DAYS, latest ESTIMATE_SAMPLE runs, by tenants now on that tier
(executions do not record the tier they ran at; a tenant that changed tier is counted at its
current one). Runs of other tenants count only when the sample holds runs of at least
ESTIMATE_MIN_TENANTS tenants, so no answer describes one other tenant's runs; otherwise only the
caller's own runs count. Below ESTIMATE_MIN_RUNS runs the percentiles are null (basedOnRuns
says how many there were).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from app.ai.budget import month_bounds
from app.ai.pricing import usd
from app.analytics.forecasting import ForecastMethod, fit, method_for
from app.analytics.planning_repository import PlanningRepository, RunCosts
from app.errors import ValidationFailed
from app.tiers import get_tier

HISTORY_DAYS = 56
ESTIMATE_DAYS = 90
ESTIMATE_SAMPLE = 1000
ESTIMATE_MIN_RUNS = 5
ESTIMATE_MIN_TENANTS = 3


@dataclass(frozen=True)
class CostForecastReport:
    month: str  # "YYYY-MM"
    as_of: datetime
    month_to_date_usd: Decimal
    forecast_usd: Decimal | None
    low_usd: Decimal | None
    high_usd: Decimal | None
    method: ForecastMethod
    history_days: int


@dataclass(frozen=True)
class CostEstimateReport:
    tier: str
    based_on_runs: int
    p50_usd: Decimal | None
    p95_usd: Decimal | None


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def history_series(totals: Mapping[date, Decimal | int], first: date, end: date) -> list[float]:
    """Daily totals from `first` to the day before `end`, zero where none is recorded."""
    return [float(totals.get(first + timedelta(days=i), 0)) for i in range((end - first).days)]


def remaining_days(as_of: datetime, until: datetime) -> list[tuple[date, float]]:
    """(day, share still to come) from `as_of` to `until` (exclusive): today's remaining
    share, then whole days."""
    today = as_of.date()
    share = 1 - (as_of - day_start(today)).total_seconds() / 86400
    days = [(today, share)] if share > 0 else []
    day = today + timedelta(days=1)
    while day_start(day) < until:
        days.append((day, 1.0))
        day += timedelta(days=1)
    return days


class ForecastService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = PlanningRepository(session)

    async def cost_forecast(self, tenant_id: uuid.UUID, as_of: datetime) -> CostForecastReport:
        """The tenant's AI spend for the UTC month holding `as_of`: so far, and forecast."""
        as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
        month_start, month_end = month_bounds(as_of)
        today = as_of.date()
        window = today - timedelta(days=HISTORY_DAYS)
        # The history window (56 days) always reaches back before the month's first day.
        totals = await self.repo.daily_ai_cost(tenant_id, day_start(window), as_of)
        so_far = usd(sum((v for d, v in totals.items() if d >= month_start.date()), Decimal(0)))
        used = [d for d in totals if window <= d < today]
        first = min(used) if used else today
        history = history_series(totals, first, today)
        model = fit(first, history)
        report = CostForecastReport(
            month=month_start.strftime("%Y-%m"),
            as_of=as_of,
            month_to_date_usd=so_far,
            forecast_usd=None,
            low_usd=None,
            high_usd=None,
            method=method_for(len(history)) if model is None else model.method,
            history_days=len(history),
        )
        if model is None:
            return report
        rest = model.total(remaining_days(as_of, month_end))

        def total(x: float) -> Decimal:
            return usd(so_far + Decimal(str(x)))

        return replace(
            report,
            forecast_usd=total(rest.expected),
            low_usd=total(rest.low),
            high_usd=total(rest.high),
        )

    async def cost_estimates(
        self, caller: uuid.UUID, keys: list[tuple[uuid.UUID, str]], as_of: datetime
    ) -> list[CostEstimateReport]:
        """AI cost per run of each (template, tier), in the order of `keys`; the templates
        are ones the caller can read (the caller checks). One statement per tier asked."""
        by_tier: dict[str, dict[uuid.UUID, RunCosts]] = {}
        for tier in dict.fromkeys(tier for _, tier in keys):
            if get_tier(tier) is None:
                raise ValidationFailed(f"no tier {tier!r}")
            by_tier[tier] = await self.repo.template_run_costs(
                [template for template, t in keys if t == tier],
                tier,
                caller,
                as_of - timedelta(days=ESTIMATE_DAYS),
                ESTIMATE_SAMPLE,
                ESTIMATE_MIN_TENANTS,
            )
        return [
            _estimate(tier, by_tier[tier].get(template, RunCosts(0, None, None)))
            for template, tier in keys
        ]


def _estimate(tier: str, costs: RunCosts) -> CostEstimateReport:
    enough = costs.runs >= ESTIMATE_MIN_RUNS
    return CostEstimateReport(
        tier=tier,
        based_on_runs=costs.runs,
        p50_usd=usd(costs.p50) if enough and costs.p50 is not None else None,
        p95_usd=usd(costs.p95) if enough and costs.p95 is not None else None,
    )
