"""Impact analytics in GraphQL: `templateImpact`, a template's AI-enhanced runs against its
baseline runs for the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry

from app.ai.pricing import usd
from app.analytics.repository import GroupStats
from app.analytics.service import ImpactService
from app.api.context import Context
from app.api.relay import from_global_id
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
