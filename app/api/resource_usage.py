"""Resource usage in GraphQL: `Execution.resourceUsage` and the usage type that
`templateResourceUsage` (app/api/analytics.py) answers with. Its own module, since
app/api/executions.py resolves through it while app/api/analytics.py imports the executions
filter."""

from __future__ import annotations

import uuid
from decimal import Decimal

import strawberry

from app.ai.pricing import usd
from app.analytics.service import UsageReport, UsageService
from app.analytics.usage_repository import StepFigures
from app.api.context import Context


@strawberry.type(description="What one step used, over all its runs.")
class StepResourceUsage:
    step_id: str
    activity: str | None = strawberry.field(description="The step's activity, e.g. email.send.")
    attempts: int = strawberry.field(
        description="Runs of the step, as Step.attempts: times it started (a retried "
        "execution runs a failed step again; Temporal's own retries of an activity "
        "inside one run are not counted)."
    )
    activity_retries: int = strawberry.field(
        description="Times Temporal ran the step's activity again within a run (a transient "
        "failure, a timeout); recorded since 2026-12, 0 for earlier runs."
    )
    completed: int
    active_seconds: float = strawberry.field(
        description="Time from each start to its completion or failure, summed."
    )
    bytes_written: int | None = strawberry.field(
        description="Bytes files.write/copy/archive wrote; null when no completion of the "
        "step recorded its usage (completed before usage was recorded)."
    )
    emails_sent: int | None = strawberry.field(
        description="Recipients the SMTP server accepted (email.send)."
    )
    http_calls: int | None = strawberry.field(description="Requests made (http.request).")
    ai_calls: int = strawberry.field(description="AI usage records: calls, cache hits, fallbacks.")
    ai_input_tokens: int
    ai_output_tokens: int
    ai_cost_usd: Decimal

    @classmethod
    def from_figures(cls, f: StepFigures) -> StepResourceUsage:
        known = f.recorded > 0
        return cls(
            step_id=f.step_id,
            activity=f.activity,
            attempts=f.runs,
            activity_retries=f.retries,
            completed=f.completed,
            active_seconds=f.active_seconds,
            bytes_written=f.bytes_written if known else None,
            emails_sent=f.emails_sent if known else None,
            http_calls=f.http_calls if known else None,
            ai_calls=f.ai_calls,
            ai_input_tokens=f.ai_input_tokens,
            ai_output_tokens=f.ai_output_tokens,
            ai_cost_usd=usd(f.ai_cost_usd),
        )


def _known(steps: list[StepFigures], name: str) -> int | None:
    values = [getattr(s, name) for s in steps if s.recorded]
    return sum(values) if values else None


@strawberry.type(
    description="Resources used by one execution or by a template's runs: time, step runs, "
    "AI tokens and cost, bytes written to storage, emails sent and HTTP calls. Bytes, emails "
    "and HTTP calls are recorded by step completions since 2026-12; for earlier runs they "
    "are null, and completionsWithUsage < completions says a total misses some."
)
class ResourceUsage:
    executions: int
    finished: int
    wall_seconds: float = strawberry.field(
        description="Start to finish, summed over the runs (an unfinished one until now)."
    )
    wall_p50_seconds: float | None = strawberry.field(description="Of finished runs.")
    wall_p95_seconds: float | None
    activity_seconds: float = strawberry.field(description="Steps' active time, summed.")
    step_attempts: int = strawberry.field(description="Step runs, summed.")
    activity_retries: int = strawberry.field(
        description="Temporal's retries of step activities, summed (recorded since 2026-12)."
    )
    completions: int = strawberry.field(description="Step completions.")
    completions_with_usage: int = strawberry.field(
        description="Step completions that recorded bytes, emails and HTTP calls."
    )
    bytes_written: int | None
    emails_sent: int | None
    http_calls: int | None
    ai_calls: int
    ai_input_tokens: int
    ai_output_tokens: int
    ai_cost_usd: Decimal
    steps: list[StepResourceUsage]

    @classmethod
    def from_report(cls, r: UsageReport) -> ResourceUsage:
        steps = r.steps
        return cls(
            executions=r.runs.executions,
            finished=r.runs.finished,
            wall_seconds=r.runs.wall_seconds,
            wall_p50_seconds=r.runs.wall_p50_seconds,
            wall_p95_seconds=r.runs.wall_p95_seconds,
            activity_seconds=sum(s.active_seconds for s in steps),
            step_attempts=sum(s.runs for s in steps),
            activity_retries=sum(s.retries for s in steps),
            completions=sum(s.completed for s in steps),
            completions_with_usage=sum(s.recorded for s in steps),
            bytes_written=_known(steps, "bytes_written"),
            emails_sent=_known(steps, "emails_sent"),
            http_calls=_known(steps, "http_calls"),
            ai_calls=sum(s.ai_calls for s in steps),
            ai_input_tokens=sum(s.ai_input_tokens for s in steps),
            ai_output_tokens=sum(s.ai_output_tokens for s in steps),
            ai_cost_usd=usd(sum((s.ai_cost_usd for s in steps), Decimal(0))),
            steps=[StepResourceUsage.from_figures(s) for s in steps],
        )


async def execution_resource_usage(
    info: strawberry.Info[Context, None], execution_id: uuid.UUID
) -> ResourceUsage:
    """Execution.resourceUsage (app/api/executions.py resolves through here)."""
    tenant_id = info.context.principal().tenant_id
    async with info.context.session() as s:
        report = await UsageService(s).execution(tenant_id, execution_id)
    return ResourceUsage.from_report(report)
