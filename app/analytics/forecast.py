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
versions) in the last ESTIMATE_DAYS, latest ESTIMATE_SAMPLE runs, of that tier (the tier each
run recorded: executions.tier; runs created before migration 0019 recorded none and count at
their tenant's current tier). Computed for every template and tier by each analytics rollup
refresh (template_cost_estimates: a page of templates is one indexed read instead of a walk
of each one's runs), so an estimate is as of the last refresh (`as_of`), at most
ANALYTICS_ROLLUP_SECONDS old while the schedule runs.
Only the caller's own runs count, unless the sample holds runs of at least
ESTIMATE_MIN_OTHER_TENANTS tenants besides the caller, none of them more than
ESTIMATE_MAX_OTHER_SHARE of those runs, and ESTIMATE_MIN_MIXED_RUNS runs in all; then every run
of the sample counts. The caller is not one of the others: with two others, basedOnRuns minus
its own runs would be the exact count of those two, and cheap own runs would move the
percentiles onto theirs. When others' runs count, basedOnRuns is rounded down (to 10s below
100, then 100s: `coarse_runs`), so subtracting one's own runs gives the others' count only to
within that step; the percentiles are over the exact sample. Below ESTIMATE_MIN_RUNS runs the
percentiles are null (basedOnRuns says how many there were). Tenants run by one party count as
separate tenants: what an estimate hides it hides from tenants, not from whoever runs three.
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
from app.analytics.planning_repository import PlanningRepository, RunCosts, TemplateRuns
from app.errors import ValidationFailed
from app.tiers import get_tier

HISTORY_DAYS = 56
ESTIMATE_DAYS = 90
ESTIMATE_SAMPLE = 1000
ESTIMATE_MIN_RUNS = 5
# Other tenants' runs count only with runs of at least this many tenants besides the caller...
ESTIMATE_MIN_OTHER_TENANTS = 3
# ...none of which holds more than this share of those runs...
ESTIMATE_MAX_OTHER_SHARE = Decimal("0.5")
# ...and this many runs in all (so a rounded basedOnRuns is never 0 beside percentiles).
ESTIMATE_MIN_MIXED_RUNS = 10


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
    # The last analytics rollup refresh, which computed the estimate (None: none yet).
    as_of: datetime | None
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
        self, caller: uuid.UUID, keys: list[tuple[uuid.UUID, str]]
    ) -> list[CostEstimateReport]:
        """AI cost per run of each (template, tier), in the order of `keys`, as of the last
        analytics rollup refresh (template_cost_estimates); the templates are ones the caller
        can read (the caller checks). One statement for all the keys."""
        for tier in {tier for _, tier in keys}:
            if get_tier(tier) is None:
                raise ValidationFailed(f"no tier {tier!r}")
        found = await self.repo.cost_estimates(keys, caller)
        as_of = await self.repo.estimates_as_of()
        return [_estimate(tier, found.get((t, tier)), as_of) for t, tier in keys]

    async def refresh_cost_estimates(self, now: datetime, complete_until: date) -> int:
        """Recompute every template's estimates as of `now` (the analytics rollup refresh,
        right after it rebuilt the rollup up to `complete_until`); the rows written."""
        since = now - timedelta(days=ESTIMATE_DAYS)
        return await self.repo.refresh_cost_estimates(since, ESTIMATE_SAMPLE, complete_until)


def others_count(runs: TemplateRuns) -> bool:
    """Whether other tenants' runs may count: enough of them besides the caller, none
    dominating, and enough runs in all."""
    return (
        runs.other_tenants >= ESTIMATE_MIN_OTHER_TENANTS
        and runs.top_other_runs <= ESTIMATE_MAX_OTHER_SHARE * runs.other_runs
        and runs.every.runs >= ESTIMATE_MIN_MIXED_RUNS
    )


def coarse_runs(runs: int) -> int:
    """A run count rounded down: to 10s below 100, to 100s from 100."""
    step = 10 if runs < 100 else 100
    return runs // step * step


def _estimate(tier: str, runs: TemplateRuns | None, as_of: datetime | None) -> CostEstimateReport:
    if runs is not None and others_count(runs):
        costs, based_on = runs.every, coarse_runs(runs.every.runs)
    else:
        costs = runs.own if runs is not None else RunCosts(0, None, None)
        based_on = costs.runs
    enough = costs.runs >= ESTIMATE_MIN_RUNS
    return CostEstimateReport(
        tier=tier,
        as_of=as_of,
        based_on_runs=based_on,
        p50_usd=usd(costs.p50) if enough and costs.p50 is not None else None,
        p95_usd=usd(costs.p95) if enough and costs.p95 is not None else None,
    )
