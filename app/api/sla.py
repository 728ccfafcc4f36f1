"""SLAs in GraphQL (docs/analytics.md, "SLAs"): `slaReport(from, to)`, and an admin's
`setTemplateSla` / `clearTemplateSla` overrides of a template's targets."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import strawberry

from app.analytics.sla import (
    MAX_RATE_BREACHES,
    MAX_REPORT_SPAN,
    MAX_REPORT_TEMPLATES,
    SlaReportService,
    checked_sla,
)
from app.analytics.sla import TemplateSlaReport as Report
from app.api.context import Context
from app.api.errors import ForbiddenError, NotFoundError, ValidationError
from app.api.executions import Execution
from app.api.relay import Connection, from_global_id
from app.api.templates import Template
from app.models import SlaBreach
from app.sla.service import Target
from app.sla_limits import DEFAULT_MIN_RUNS, DEFAULT_WINDOW_SECONDS


@strawberry.enum(description="Where the targets in force come from.")
class SlaSource(enum.Enum):
    OVERRIDE = strawberry.enum_value("OVERRIDE", description="Your tenant's setTemplateSla.")
    VERSION = strawberry.enum_value("VERSION", description="The template version's `sla` block.")


@strawberry.type(description="A template's service-level targets.")
class SlaTarget:
    max_duration_seconds: float | None = strawberry.field(
        description="A run takes at most this long from its creation to its end (queued "
        "time counts)."
    )
    min_success_rate: float | None = strawberry.field(
        description="Of the runs created in the last windowSeconds that ended COMPLETED or "
        "FAILED, at least this share (0..1) completed."
    )
    window_seconds: int
    min_runs: int = strawberry.field(
        description="The success rate is judged once this many runs of the window ended."
    )
    source: SlaSource

    @classmethod
    def of(cls, t: Target | None) -> SlaTarget | None:
        if t is None:
            return None
        return cls(
            max_duration_seconds=t.sla.max_duration_seconds,
            min_success_rate=t.sla.min_success_rate,
            window_seconds=t.sla.window_seconds,
            min_runs=t.sla.min_runs,
            source=SlaSource(t.source),
        )


@strawberry.type(
    description="A period in which the success rate over the SLA window was below target."
)
class SlaRateBreach:
    started_at: datetime = strawberry.field(description="When an evaluation first found it.")
    ended_at: datetime | None = strawberry.field(
        description="When it was back on target; null while it lasts."
    )
    success_rate: float = strawberry.field(description="The rate when the breach was found.")
    min_success_rate: float
    runs: int
    window_seconds: int

    @classmethod
    def from_model(cls, m: SlaBreach) -> SlaRateBreach:
        return cls(
            started_at=m.started_at,
            ended_at=m.ended_at,
            success_rate=m.observed,
            min_success_rate=m.target,
            runs=m.runs or 0,
            window_seconds=m.window_seconds or 0,
        )


@strawberry.type(
    name="SlaBreachedRunConnection", description="Runs that breached their duration target."
)
class SlaBreachedRunConnection(Connection[Execution]):
    pass


@strawberry.type(
    description="One template's runs by your tenant created in [from, to), against its SLA. "
    "Each run's duration is judged against the target in force for it (your override, else "
    "the `sla` block of the version it ran); the success rate against `target`."
)
class TemplateSlaReport:
    template: Template
    target: SlaTarget | None = strawberry.field(
        description="The targets in force now (override, else the latest version's); null "
        "when there are none."
    )
    runs: int
    completed: int
    failed: int
    cancelled: int
    duration_measured: int = strawberry.field(
        description="Runs with a duration target that ended, or are still open past it."
    )
    duration_breached: int = strawberry.field(description="Of those, the runs over their target.")
    attainment: float | None = strawberry.field(
        description="Share of durationMeasured within target; null when nothing was measured."
    )
    success_rate: float | None = strawberry.field(
        description="completed / (completed + failed); null without such runs."
    )
    success_rate_met: bool | None = strawberry.field(
        description="successRate >= target.minSuccessRate; null without a rate target or with "
        "fewer than target.minRuns ended runs."
    )
    report: strawberry.Private[Report]

    @classmethod
    def of(cls, r: Report) -> TemplateSlaReport:
        s = r.stats
        return cls(
            template=Template.from_model(r.template),
            target=SlaTarget.of(r.target),
            runs=s.runs,
            completed=s.completed,
            failed=s.failed,
            cancelled=s.cancelled,
            duration_measured=s.measured,
            duration_breached=s.breached,
            attainment=r.attainment,
            success_rate=r.success_rate,
            success_rate_met=r.success_rate_met,
            report=r,
        )

    @strawberry.field(description="The runs over their duration target, newest first.")
    async def breaches(
        self, info: strawberry.Info[Context, None], first: int | None = 20, after: str | None = None
    ) -> SlaBreachedRunConnection:
        tenant_id = info.context.principal().tenant_id
        async with info.context.session() as s:
            page = await SlaReportService(s).breached_runs(tenant_id, self.report, first, after)
        nodes = [Execution.from_model(e) for e in page.items]
        base = Connection.build(nodes, page.cursors, page.has_next, after is not None)
        return SlaBreachedRunConnection(edges=base.edges, page_info=base.page_info)

    @strawberry.field(
        description=f"Success-rate breaches overlapping [from, to), newest first (at most "
        f"{MAX_RATE_BREACHES})."
    )
    async def success_rate_breaches(
        self, info: strawberry.Info[Context, None]
    ) -> list[SlaRateBreach]:
        tenant_id = info.context.principal().tenant_id
        async with info.context.session() as s:
            rows = await SlaReportService(s).rate_breaches(tenant_id, self.report)
        return [SlaRateBreach.from_model(b) for b in rows]


@strawberry.type
class SlaReport:
    from_: datetime = strawberry.field(name="from")
    to: datetime
    templates: list[TemplateSlaReport]


@strawberry.input(description="Targets for a template's runs; at least one of the first two.")
class SlaInput:
    max_duration_seconds: float | None = strawberry.field(
        default=None, description="Over 0, at most 30 days (2592000)."
    )
    min_success_rate: float | None = strawberry.field(default=None, description="0..1.")
    window_seconds: int = strawberry.field(
        default=DEFAULT_WINDOW_SECONDS, description="300 (5 minutes) to 2678400 (31 days)."
    )
    min_runs: int = strawberry.field(default=DEFAULT_MIN_RUNS, description="1 to 100000.")


@strawberry.type(description="Your tenant's targets for a template, in force for its runs.")
class TemplateSla:
    template: Template
    target: SlaTarget | None = strawberry.field(
        description="After clearTemplateSla: the latest version's targets, or null."
    )


TemplateSlaResult = Annotated[
    TemplateSla | ValidationError | ForbiddenError | NotFoundError,
    strawberry.union("TemplateSlaResult"),
]


@strawberry.type
class SlaQuery:
    @strawberry.field(
        description=f"Your tenant's runs created in [from, to) against their templates' SLAs: "
        f"per template with targets in force (at most {MAX_REPORT_TEMPLATES}, by name), or "
        f"only templateId's. The window spans at most {MAX_REPORT_SPAN.days} days."
    )
    async def sla_report(
        self,
        info: strawberry.Info[Context, None],
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        template_id: strawberry.ID | None = None,
    ) -> SlaReport:
        principal = info.context.principal()
        pk = from_global_id(template_id, "Template")[1] if template_id is not None else None
        async with info.context.session() as s:
            reports = await SlaReportService(s).report(principal.tenant_id, from_, to, pk)
        since, until = (reports[0].since, reports[0].until) if reports else (from_, to)
        return SlaReport(
            from_=since, to=until, templates=[TemplateSlaReport.of(r) for r in reports]
        )


@strawberry.type
class SlaMutation:
    @strawberry.mutation(
        description="Set your tenant's SLA targets for a template you can read; they replace "
        "its versions' `sla` blocks for your runs. Admins only."
    )
    async def set_template_sla(
        self, info: strawberry.Info[Context, None], template_id: strawberry.ID, input: SlaInput
    ) -> TemplateSlaResult:
        principal = info.context.principal()
        pk = from_global_id(template_id, "Template")[1]
        sla = checked_sla(
            {
                "max_duration_seconds": input.max_duration_seconds,
                "min_success_rate": input.min_success_rate,
                "window_seconds": input.window_seconds,
                "min_runs": input.min_runs,
            }
        )
        async with info.context.session() as s:
            service = SlaReportService(s)
            template, _ = await service.set_override(principal, pk, sla)
            await s.commit()
            target = await service.target_now(principal.tenant_id, template.id)
        return TemplateSla(template=Template.from_model(template), target=SlaTarget.of(target))

    @strawberry.mutation(
        description="Remove your tenant's SLA override of a template: its versions' targets "
        "apply again. Admins only."
    )
    async def clear_template_sla(
        self, info: strawberry.Info[Context, None], template_id: strawberry.ID
    ) -> TemplateSlaResult:
        principal = info.context.principal()
        pk = from_global_id(template_id, "Template")[1]
        async with info.context.session() as s:
            template, target = await SlaReportService(s).clear_override(principal, pk)
            await s.commit()
        return TemplateSla(template=Template.from_model(template), target=SlaTarget.of(target))
