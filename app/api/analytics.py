"""Analytics in GraphQL: `templateImpact` (a template's AI-enhanced runs against its baseline
runs), `executionStats` (buckets of executions with their trends) for the caller's tenant, and
for a platform credential `executionStats` across tenants (counts by day, week, status or
tier only: it reads no tenant's templates or params)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated

import strawberry

from app.ai.pricing import usd
from app.analytics.repository import GroupStats
from app.analytics.service import (
    ImpactService,
    StatsBucket,
    StatsService,
    UsageService,
)
from app.analytics.stats_repository import Figures
from app.api.context import Context
from app.api.executions import ExecutionFilter
from app.api.relay import from_global_id, to_global_id
from app.api.resource_usage import ResourceUsage
from app.api.templates import Template


@strawberry.type(description="One group of a template's runs: counts, durations and AI cost.")
class ImpactGroup:
    executions: int
    completed: int
    failed: int
    cancelled: int
    completion_rate: float | None = strawberry.field(
        description="completed / (completed + failed + cancelled); null without finished runs."
    )
    median_duration_seconds: float | None = strawberry.field(
        description="Median start-to-finish time of finished runs."
    )
    p95_duration_seconds: float | None
    ai_cost_usd: Decimal = strawberry.field(description="Sum of the group's AI usage, in USD.")
    avg_ai_cost_usd: Decimal | None = strawberry.field(
        description="AI cost per execution; null without executions."
    )

    @classmethod
    def from_stats(cls, s: GroupStats) -> ImpactGroup:
        finished = s.completed + s.failed + s.cancelled
        return cls(
            executions=s.executions,
            completed=s.completed,
            failed=s.failed,
            cancelled=s.cancelled,
            completion_rate=s.completed / finished if finished else None,
            median_duration_seconds=s.median_seconds,
            p95_duration_seconds=s.p95_seconds,
            ai_cost_usd=s.ai_cost_usd,
            avg_ai_cost_usd=usd(s.ai_cost_usd / s.executions) if s.executions else None,
        )


@strawberry.type(
    description="A template's runs by the caller's tenant created in [from, to): those where "
    "AI was applied at least once (an enhancement point chose AI, or a step called a model) "
    "against the others."
)
class TemplateImpact:
    template: Template
    from_: datetime = strawberry.field(name="from")
    to: datetime
    enhanced: ImpactGroup
    baseline: ImpactGroup


@strawberry.enum(description="How executionStats groups executions.")
class StatsGroupBy(Enum):
    DAY = "DAY"
    WEEK = "WEEK"
    TEMPLATE = "TEMPLATE"
    STATUS = "STATUS"
    TIER = "TIER"


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@strawberry.type(description="Figures of the executions created in one bucket's period.")
class StatsFigures:
    total: int = strawberry.field(description="Executions created, whatever their status.")
    completed: int
    failed: int
    cancelled: int
    success_rate: float | None = strawberry.field(
        description="completed / (completed + failed + cancelled); null without finished runs."
    )
    duration_p50_seconds: float | None = strawberry.field(
        description="Start-to-finish time of finished runs, interpolated (percentile_cont)."
    )
    duration_p95_seconds: float | None
    duration_p99_seconds: float | None
    ai_cost_usd: Decimal = strawberry.field(description="AI usage of these runs, in USD.")
    ai_enhanced: int = strawberry.field(
        description="Runs where a model answered at least one AI call (not a baseline or fallback)."
    )
    ai_enhanced_share: float | None = strawberry.field(
        description="aiEnhanced / total; null without executions."
    )

    @classmethod
    def from_figures(cls, f: Figures) -> StatsFigures:
        return cls(
            total=f.total,
            completed=f.completed,
            failed=f.failed,
            cancelled=f.cancelled,
            success_rate=_rate(f.completed, f.completed + f.failed + f.cancelled),
            duration_p50_seconds=f.p50_seconds,
            duration_p95_seconds=f.p95_seconds,
            duration_p99_seconds=f.p99_seconds,
            ai_cost_usd=usd(f.ai_cost_usd),
            ai_enhanced=f.ai_enhanced,
            ai_enhanced_share=_rate(f.ai_enhanced, f.total),
        )


def _delta(now: float | None, before: float | None) -> float | None:
    return None if now is None or before is None else now - before


@strawberry.type(description="current minus previous; null where either side has no value.")
class StatsChange:
    total: int
    total_ratio: float | None = strawberry.field(
        description="current total / previous total; null when the previous period had none."
    )
    success_rate: float | None
    duration_p50_seconds: float | None
    duration_p95_seconds: float | None
    duration_p99_seconds: float | None
    ai_cost_usd: Decimal
    ai_enhanced_share: float | None

    @classmethod
    def between(cls, now: StatsFigures, before: StatsFigures) -> StatsChange:
        return cls(
            total=now.total - before.total,
            total_ratio=_rate(now.total, before.total),
            success_rate=_delta(now.success_rate, before.success_rate),
            duration_p50_seconds=_delta(now.duration_p50_seconds, before.duration_p50_seconds),
            duration_p95_seconds=_delta(now.duration_p95_seconds, before.duration_p95_seconds),
            duration_p99_seconds=_delta(now.duration_p99_seconds, before.duration_p99_seconds),
            ai_cost_usd=now.ai_cost_usd - before.ai_cost_usd,
            ai_enhanced_share=_delta(now.ai_enhanced_share, before.ai_enhanced_share),
        )


@strawberry.type(
    name="ExecutionStatsBucket",
    description="One group of executions with its trend: the same figures over its previous "
    "period (DAY/WEEK: the bucket before, clipped alike; TEMPLATE/STATUS/TIER: the same key "
    "in the window of equal length before `from`).",
)
class StatsBucketType:
    key: str = strawberry.field(
        description="DAY/WEEK: the UTC date the bucket starts (a week starts on Monday); "
        "TEMPLATE: the template's name; STATUS: the status; TIER: the tier."
    )
    template_id: strawberry.ID | None = strawberry.field(description="TEMPLATE only.")
    start: datetime = strawberry.field(description="The bucket's period, clipped to the window.")
    end: datetime
    previous_start: datetime
    previous_end: datetime
    current: StatsFigures
    previous: StatsFigures
    change: StatsChange

    @classmethod
    def from_bucket(cls, b: StatsBucket) -> StatsBucketType:
        current, previous = (StatsFigures.from_figures(f) for f in (b.current, b.previous))
        return cls(
            key=b.key,
            template_id=to_global_id("Template", b.template_id) if b.template_id else None,
            start=b.start,
            end=b.end,
            previous_start=b.previous_start,
            previous_end=b.previous_end,
            current=current,
            previous=previous,
            change=StatsChange.between(current, previous),
        )


@strawberry.type(name="ExecutionStats")
class ExecutionStatsType:
    from_: datetime = strawberry.field(name="from")
    to: datetime
    group_by: StatsGroupBy
    buckets: list[StatsBucketType] = strawberry.field(
        description="DAY/WEEK: in time order, empty buckets included; others: largest first."
    )
    truncated: bool = strawberry.field(
        description="True when more keys than the 200 largest had executions."
    )


@strawberry.type(description="A template's runs by the caller's tenant created in [from, to).")
class TemplateResourceUsage:
    template: Template
    from_: datetime = strawberry.field(name="from")
    to: datetime
    usage: ResourceUsage


@strawberry.type
class AnalyticsQuery:
    @strawberry.field(
        description="What AI enhancement changes in a template's runs; the window spans at "
        "most 366 days."
    )
    async def template_impact(
        self,
        info: strawberry.Info[Context, None],
        template_id: strawberry.ID,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> TemplateImpact:
        principal = info.context.principal()
        pk = from_global_id(template_id, "Template")[1]
        async with info.context.session() as s:
            report = await ImpactService(s).template_impact(principal.tenant_id, pk, from_, to)
        return TemplateImpact(
            template=Template.from_model(report.template),
            from_=report.since,
            to=report.until,
            enhanced=ImpactGroup.from_stats(report.enhanced),
            baseline=ImpactGroup.from_stats(report.baseline),
        )

    @strawberry.field(
        description="Executions created in [from, to) (at most 366 days) grouped by groupBy, "
        "each group with the same figures over its previous period. A tenant key sees its "
        "tenant's executions; a platform credential every tenant's (groupBy DAY, WEEK, "
        "STATUS or TIER, filter by status only). filter.startedAfter/startedBefore are "
        "refused: the window is from/to."
    )
    async def execution_stats(
        self,
        info: strawberry.Info[Context, None],
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        group_by: StatsGroupBy,
        filter: ExecutionFilter | None = None,
    ) -> ExecutionStatsType:
        ctx = info.context
        tenant_id = None if ctx.platform_ is not None else ctx.principal().tenant_id
        request = filter.request() if filter is not None else None
        async with ctx.session() as s:
            service = StatsService(s)
            scope = await service.scope(
                tenant_id, from_, to, group_by.value, request, ctx.deps.settings
            )
            report = await service.execution_stats(scope)
        return ExecutionStatsType(
            from_=report.since,
            to=report.until,
            group_by=StatsGroupBy(report.group_by),
            buckets=[StatsBucketType.from_bucket(b) for b in report.buckets],
            truncated=report.truncated,
        )

    @strawberry.field(
        description="Resource usage of a template's runs by the caller's tenant, created in "
        "[from, to) (at most 92 days), per step and in total."
    )
    async def template_resource_usage(
        self,
        info: strawberry.Info[Context, None],
        template_id: strawberry.ID,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
    ) -> TemplateResourceUsage:
        principal = info.context.principal()
        pk = from_global_id(template_id, "Template")[1]
        async with info.context.session() as s:
            report = await UsageService(s).template(principal.tenant_id, pk, from_, to)
        assert report.template is not None and report.since and report.until
        return TemplateResourceUsage(
            template=Template.from_model(report.template),
            from_=report.since,
            to=report.until,
            usage=ResourceUsage.from_report(report),
        )
