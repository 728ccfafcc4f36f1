"""Forecasts and planning in GraphQL: `costForecast` (the caller's month-end AI spend),
`Template.costEstimate` (AI cost per run at a tier; the field lives on Template), and for
platform credentials only `tenantComparison` and `capacityPlan`.

What the figures mean, and how they are computed, is written once in the service modules
(app/analytics/forecast.py, capacity.py, comparison.py) and for users in docs/analytics.md.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

import strawberry

from app.ai.pricing import usd
from app.analytics.capacity import CapacityReport, CapacityService
from app.analytics.comparison import TenantComparison, TenantComparisonRow, TenantRankBy
from app.analytics.forecast import CostEstimateReport, CostForecastReport, ForecastService
from app.analytics.forecasting import ForecastMethod
from app.analytics.storage_usage import gauge_for
from app.api.context import Context
from app.api.relay import Connection, to_global_id
from app.api.viewer import Tier
from app.models.base import utcnow
from app.temporal_queues import inspector_for

strawberry.enum(
    ForecastMethod,
    name="ForecastMethod",
    description="How a forecast was made, by the whole UTC days of history it had: "
    "TREND_WEEKDAY (28+ days: linear trend x weekday factors), TREND (14-27: linear trend), "
    "DAILY_MEAN (3-13: the mean day), TOO_LITTLE_HISTORY (under 3 days: no forecast).",
)
strawberry.enum(
    TenantRankBy,
    name="TenantRankBy",
    description="The figure tenants are ranked by, most first (the slowest first for "
    "P95_DURATION); tenants without it last.",
)


@strawberry.type(
    description="The caller's AI spend in the current UTC month: so far, and forecast to the "
    "month's end with a 95% interval (null with TOO_LITTLE_HISTORY)."
)
class CostForecast:
    month: str = strawberry.field(description='"YYYY-MM", UTC.')
    as_of: datetime
    month_to_date_usd: Decimal
    forecast_usd: Decimal | None = strawberry.field(
        description="Expected month-end total: month to date plus the forecast of the rest."
    )
    low: Decimal | None = strawberry.field(description="95% interval, lower end (USD).")
    high: Decimal | None = strawberry.field(description="95% interval, upper end (USD).")
    method: ForecastMethod
    history_days: int = strawberry.field(description="Whole UTC days of history used.")

    @classmethod
    def from_report(cls, r: CostForecastReport) -> CostForecast:
        return cls(
            month=r.month,
            as_of=r.as_of,
            month_to_date_usd=r.month_to_date_usd,
            forecast_usd=r.forecast_usd,
            low=r.low_usd,
            high=r.high_usd,
            method=r.method,
            history_days=r.history_days,
        )


@strawberry.type(
    description="AI cost of one completed run of a template at a tier, from recorded runs "
    "of the last 90 days (see docs/analytics.md); percentiles are null below 5 runs."
)
class CostEstimate:
    tier: Tier
    p50_usd: Decimal | None
    p95_usd: Decimal | None
    based_on_runs: int = strawberry.field(
        description="Runs in the sample: exact when only your own runs count, rounded down "
        "(to 10s, from 100 to 100s) when other tenants' runs count too."
    )
    as_of: datetime | None = strawberry.field(
        description="When the estimate was computed: the last analytics rollup refresh "
        "(every few minutes); runs recorded since count from the next one. Null before the "
        "first refresh."
    )

    @classmethod
    def from_report(cls, r: CostEstimateReport) -> CostEstimate:
        return cls(
            tier=Tier(r.tier),
            p50_usd=r.p50_usd,
            p95_usd=r.p95_usd,
            based_on_runs=r.based_on_runs,
            as_of=r.as_of,
        )


@strawberry.type(description="One tenant's figures in the tenant comparison.")
class TenantComparisonEntry:
    rank: int = strawberry.field(description="Position in the whole ranking, from 1.")
    tenant_id: strawberry.ID = strawberry.field(description="The Tenant node id.")
    name: str
    tier: Tier
    executions: int = strawberry.field(description="Executions created in the window.")
    completed: int
    success_rate: float | None = strawberry.field(
        description="completed / finished (completed, failed, cancelled); null without any."
    )
    ai_spend_usd: Decimal
    storage_bytes: float | None = strawberry.field(
        description="Storage held now (not in the window), in bytes (a Float: GraphQL's Int "
        "ends at 2 GiB); null until measured."
    )
    storage_measured_at: datetime | None
    p95_duration_seconds: float | None = strawberry.field(
        description="95th percentile start-to-finish time of the window's finished runs."
    )

    @classmethod
    def from_row(cls, r: TenantComparisonRow) -> TenantComparisonEntry:
        f = r.figures
        return cls(
            rank=r.rank,
            tenant_id=strawberry.ID(to_global_id("Tenant", f.tenant_id)),
            name=f.name,
            tier=Tier(f.tier),
            executions=f.executions,
            completed=f.completed,
            success_rate=r.success_rate,
            ai_spend_usd=usd(f.ai_spend_usd),
            storage_bytes=None if r.storage is None else float(r.storage.bytes),
            storage_measured_at=None if r.storage is None else r.storage.at,
            p95_duration_seconds=f.p95_seconds,
        )


@strawberry.type
class TenantComparisonPage:
    from_: datetime = strawberry.field(name="from")
    to: datetime
    order_by: TenantRankBy
    ranking: Connection[TenantComparisonEntry]


@strawberry.type
class ExecutionsDayForecast:
    day: date
    executions: float = strawberry.field(description="Expected executions created that day.")
    low: float
    high: float


@strawberry.type(
    description="Executions/day forecast against the capacity the deployment has shown; "
    "docs/analytics.md defines each figure."
)
class CapacityPlan:
    as_of: datetime
    workers: int | None = strawberry.field(
        description="Workers polling the workflow task queue now; null if Temporal was "
        "not reachable."
    )
    peak_hourly_completions: int | None = strawberry.field(
        description="Most executions finished in one clock hour (UTC) in the last 28 days."
    )
    peak_hour_at: datetime | None
    peak_hour_share: float | None = strawberry.field(
        description="Median share of a day's executions created in its busiest hour."
    )
    daily_capacity: float | None = strawberry.field(
        description="peakHourlyCompletions / peakHourShare: executions per day the measured "
        "peak carries."
    )
    method: ForecastMethod
    history_days: int
    runs_out_on: date | None = strawberry.field(
        description="First day whose expected executions pass dailyCapacity within the "
        "horizon; null when they never do."
    )
    forecast: list[ExecutionsDayForecast]

    @classmethod
    def from_report(cls, r: CapacityReport) -> CapacityPlan:
        return cls(
            as_of=r.as_of,
            workers=r.workers,
            peak_hourly_completions=None if r.peak is None else r.peak.completions,
            peak_hour_at=None if r.peak is None else r.peak.at,
            peak_hour_share=r.peak_hour_share,
            daily_capacity=r.daily_capacity,
            method=r.method,
            history_days=r.history_days,
            runs_out_on=r.runs_out_on,
            forecast=[
                ExecutionsDayForecast(day=d.day, executions=d.expected, low=d.low, high=d.high)
                for d in r.forecast
            ],
        )


async def cost_estimate(
    info: strawberry.Info[Context, None], template_id: uuid.UUID, tier: Tier | None
) -> CostEstimate:
    """Template.costEstimate: the template is one the caller has already read."""
    chosen = (tier or Tier(info.context.principal().tier)).value
    report = await info.context.loaders.cost_estimates.load((template_id, chosen))
    return CostEstimate.from_report(report)


@strawberry.type
class ForecastQuery:
    @strawberry.field(description="Your AI spend this UTC month and its month-end forecast.")
    async def cost_forecast(self, info: strawberry.Info[Context, None]) -> CostForecast:
        principal = info.context.principal()
        async with info.context.session() as s:
            report = await ForecastService(s).cost_forecast(principal.tenant_id, utcnow())
        return CostForecast.from_report(report)

    @strawberry.field(
        description="Tenants with executions or AI usage in [from, to) (at most 366 days), "
        "ranked; platform credentials only."
    )
    async def tenant_comparison(
        self,
        info: strawberry.Info[Context, None],
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        order_by: TenantRankBy = TenantRankBy.EXECUTIONS,
        first: int | None = 20,
        after: str | None = None,
    ) -> TenantComparisonPage:
        platform = info.context.platform()
        gauge = gauge_for(info.context.deps.settings)
        async with info.context.session() as s:
            since, until, page = await TenantComparison(s, gauge).page(
                platform, from_, to, order_by, first, after
            )
        nodes = [TenantComparisonEntry.from_row(r) for r in page.items]
        return TenantComparisonPage(
            from_=since,
            to=until,
            order_by=order_by,
            ranking=Connection.build(nodes, page.cursors, page.has_next, after is not None),
        )

    @strawberry.field(
        description="Executions/day forecast against measured capacity, and the day it runs "
        "out; horizonDays 1-365. Platform credentials only."
    )
    async def capacity_plan(
        self, info: strawberry.Info[Context, None], horizon_days: int = 90
    ) -> CapacityPlan:
        platform = info.context.platform()
        deps = info.context.deps
        queue = await inspector_for(deps.temporal).describe(deps.settings.temporal_task_queue)
        async with info.context.session() as s:
            report = await CapacityService(s).plan(platform, utcnow(), queue.pollers, horizon_days)
        return CapacityPlan.from_report(report)
