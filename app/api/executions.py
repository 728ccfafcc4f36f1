"""Execution types, queries, the startExecution mutation and the executionUpdates subscription."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, cast

import strawberry
from strawberry.scalars import JSON

from app.ai.pricing import usd
from app.api.context import Context
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from app.api.execution_events import (
    ExecutionEvent,
    ExecutionStatus,
    StepState,
    step_states,
)
from app.api.relay import Connection, Node, from_global_id, to_global_id
from app.api.templates import Template
from app.errors import NotFound, ValidationFailed
from app.events import channels
from app.events.bus import Event
from app.executions.repository import ExecutionCriteria, ExecutionRepository
from app.executions.service import COUNT_CAP, ExecutionService, StartRequest
from app.executions.service import ExecutionFilter as ExecutionFilterRequest
from app.models import Execution as ExecutionModel
from app.models.states import ACTIVE, TERMINAL, TERMINAL_EVENTS, Status
from app.pagination import window

if TYPE_CHECKING:
    from app.api.ai import AiUsageRecord
    from app.api.resource_usage import ResourceUsage

CATCH_UP_BATCH = 500


@strawberry.type
class Execution(Node):
    status: ExecutionStatus
    progress: float = strawberry.field(description="Percent of steps done, 0-100.")
    current_step: str | None
    params: JSON
    result: JSON | None
    error: str | None = strawberry.field(description="Why it failed; null unless FAILED.")
    idempotency_key: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    pk: strawberry.Private[uuid.UUID]
    template_pk: strawberry.Private[uuid.UUID]
    version_pk: strawberry.Private[uuid.UUID]
    workflow_id: strawberry.Private[str]
    # The row's summed AI cost (executions.ai_cost_usd, migration 0022), read with the rest of
    # the row so it is as fresh as status and progress; None until the run's first usage row.
    ai_cost: strawberry.Private[Decimal | None]

    @classmethod
    def from_model(cls, m: ExecutionModel) -> Execution:
        return cls(
            id=to_global_id("Execution", m.id),
            status=ExecutionStatus(m.status),
            progress=m.progress,
            current_step=m.current_step,
            params=cast(JSON, m.params),
            result=m.result,
            error=m.error if m.status == Status.FAILED else None,
            idempotency_key=m.idempotency_key,
            created_at=m.created_at,
            started_at=m.started_at,
            finished_at=m.finished_at,
            updated_at=m.updated_at,
            pk=m.id,
            template_pk=m.template_id,
            version_pk=m.template_version_id,
            workflow_id=m.workflow_id,
            ai_cost=m.ai_cost_usd,
        )

    @strawberry.field(
        description="The template it runs; null once the template is no longer visible to you "
        "(its owner made it private or stopped sharing it)."
    )
    async def template(self, info: strawberry.Info[Context, None]) -> Template | None:
        template = await info.context.loaders.templates.load(self.template_pk)
        return Template.from_model(template) if template is not None else None

    @strawberry.field(description="The template version this execution runs (fixed at start).")
    async def template_version(self, info: strawberry.Info[Context, None]) -> int:
        version = await info.context.loaders.versions.load(self.version_pk)
        assert version is not None
        return version.version

    @strawberry.field(
        description="When it should finish: its start plus the median duration of the "
        "template's recent completed runs; null once finished or without history."
    )
    async def estimated_finish_at(self, info: strawberry.Info[Context, None]) -> datetime | None:
        if self.status not in ACTIVE:
            return None
        async with info.context.session() as s:
            typical = await ExecutionRepository(s).typical_duration(self.template_pk)
        if typical is None:
            return None
        return (self.started_at or self.created_at) + timedelta(seconds=typical)

    @strawberry.field(
        description="For platform operators only: always null for tenant API keys, since the "
        "Temporal Web UI shows every tenant's workflows and payloads. Kept for compatibility."
    )
    def temporal_ui_url(self) -> str | None:
        # Every API key belongs to a tenant, and no tenant is a platform operator; operators
        # find a workflow in the UI by its id (`wfs dev` prints the UI address).
        return None

    @strawberry.field(description="Each step's state, derived from the audit trail.")
    async def steps(self, info: strawberry.Info[Context, None]) -> list[StepState]:
        async with info.context.session() as s:
            rows = await ExecutionService(s).events_after(self.pk, 0, 10_000)
        version = await info.context.loaders.versions.load(self.version_pk)
        order = [step["id"] for step in (version.spec["steps"] if version else [])]
        return step_states(order, rows)

    @strawberry.field(description="Every AI call (or fallback) made for this execution.")
    async def ai_usage(
        self, info: strawberry.Info[Context, None]
    ) -> list[Annotated[AiUsageRecord, strawberry.lazy("app.api.ai")]]:
        from app.api.ai import AiUsageRecord

        rows = await info.context.loaders.ai_usage.load(self.pk)
        return [AiUsageRecord.from_model(r) for r in rows]

    @strawberry.field(
        description="What AI cost this execution so far, in USD: the sum of its aiUsage "
        "costs, kept on the execution's row."
    )
    def ai_cost_usd(self) -> Decimal:
        """The stored figure (the ai_usage_add_to_run trigger keeps it equal to the sum of the
        run's ai_usage rows): a page of executions shows it without reading their calls."""
        return usd(self.ai_cost)

    @strawberry.field(
        description="Time, step runs, AI tokens and cost, bytes written, emails sent and HTTP "
        "calls of this execution, per step and in total (docs/analytics.md)."
    )
    async def resource_usage(
        self, info: strawberry.Info[Context, None]
    ) -> Annotated[ResourceUsage, strawberry.lazy("app.api.resource_usage")]:
        from app.api.resource_usage import execution_resource_usage

        return await execution_resource_usage(info, self.pk)

    @strawberry.field(description="The audit trail, oldest first.")
    async def events(
        self, info: strawberry.Info[Context, None], after_seq: int = 0
    ) -> list[ExecutionEvent]:
        async with info.context.session() as s:
            rows = await ExecutionService(s).events_after(self.pk, after_seq)
        return [ExecutionEvent.from_model(r) for r in rows]


@strawberry.input
class StartExecutionInput:
    template_id: strawberry.ID | None = None
    template_name: str | None = strawberry.field(
        default=None,
        description="Your template, one shared with you or a platform one by bare name; "
        "another publisher's public template by `publisher/name` (or use templateId).",
    )
    params: JSON | None = None
    idempotency_key: str | None = strawberry.field(
        default=None, description="Starting twice with the same key returns the same execution."
    )
    params_version: int | None = strawberry.field(
        default=None,
        description=(
            "The template version these params were written for: the param migrations of "
            "the later versions are applied. Without it, params that do not fit the latest "
            "version are tried as params of each older version, newest first."
        ),
    )


StartExecutionResult = Annotated[
    Execution | ValidationError | NotFoundError | ForbiddenError | ConflictError | UnavailableError,
    strawberry.union("StartExecutionResult"),
]


async def load_execution_node(info: strawberry.Info[Context, None], pk: uuid.UUID) -> Execution:
    execution = await info.context.loaders.executions.load(pk)
    if execution is None:
        raise NotFound("execution not found")
    return Execution.from_model(execution)


@strawberry.input(description="Which executions: every given field must match.")
class ExecutionFilter:
    status: list[ExecutionStatus] | None = strawberry.field(
        default=None, description="Any of these statuses (null or empty: any status)."
    )
    template_name: str | None = strawberry.field(
        default=None,
        description="Executions of templates with this bare name (yours, the platform's, or "
        "another publisher's shared or public one).",
    )
    template_id: strawberry.ID | None = strawberry.field(
        default=None, description="Executions of this template (an unknown id matches none)."
    )
    started_after: datetime | None = strawberry.field(
        default=None,
        description="Started (createdAt: when startExecution took it) at or after this time.",
    )
    started_before: datetime | None = strawberry.field(
        default=None, description="Started (createdAt) before this time."
    )
    params_contains: JSON | None = strawberry.field(
        default=None,
        description="Params containing this JSON object (PostgreSQL `@>`: "
        '`{"region": "eu"}` matches params with region "eu" and any other keys); '
        "bounded like params.",
    )

    def request(self) -> ExecutionFilterRequest:
        template_pk = None
        if self.template_id is not None:
            try:
                template_pk = from_global_id(self.template_id, "Template")[1]
            except NotFound as exc:
                raise ValidationFailed("filter.templateId is not a Template id") from exc
        return ExecutionFilterRequest(
            statuses=[s.value for s in self.status] if self.status is not None else None,
            template_name=self.template_name,
            template_id=template_pk,
            started_after=self.started_after,
            started_before=self.started_before,
            params_contains=self.params_contains,
        )


async def execution_criteria(
    info: strawberry.Info[Context, None], service: ExecutionService, filter: ExecutionFilter | None
) -> ExecutionCriteria:
    request = filter.request() if filter is not None else ExecutionFilterRequest()
    tenant_id = info.context.principal().tenant_id
    return await service.criteria(tenant_id, request, info.context.deps.settings)


@strawberry.type(name="ExecutionConnection")
class ExecutionConnection(Connection[Execution]):
    tenant_pk: strawberry.Private[uuid.UUID]
    criteria: strawberry.Private[ExecutionCriteria]
    counting: strawberry.Private[asyncio.Future[int] | None] = None

    @strawberry.field(
        description=f"How many executions match the filter, counted up to {COUNT_CAP:,}: "
        "past that it is that number and totalCountIsExact is false. Counted only when asked."
    )
    async def total_count(self, info: strawberry.Info[Context, None]) -> int:
        return min(await self._count(info), COUNT_CAP)

    @strawberry.field(description=f"False when more than {COUNT_CAP:,} executions match.")
    async def total_count_is_exact(self, info: strawberry.Info[Context, None]) -> bool:
        return await self._count(info) <= COUNT_CAP

    async def _count(self, info: strawberry.Info[Context, None]) -> int:
        # One COUNT per connection, whichever of the two fields asks first.
        if self.counting is None:
            self.counting = asyncio.ensure_future(self._count_now(info))
        return await self.counting

    async def _count_now(self, info: strawberry.Info[Context, None]) -> int:
        async with info.context.session() as s:
            return await ExecutionService(s).count(self.tenant_pk, self.criteria)


@strawberry.type
class ExecutionQuery:
    @strawberry.field(
        description="The caller's executions matching the filter, newest first (createdAt). "
        "Page forward with first/after, backward with last/before."
    )
    async def executions(
        self,
        info: strawberry.Info[Context, None],
        filter: ExecutionFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        status: Annotated[
            ExecutionStatus | None,
            strawberry.argument(deprecation_reason="Use filter: {status: [...]}."),
        ] = None,
    ) -> ExecutionConnection:
        principal = info.context.principal()
        if status is not None:
            if filter is not None and filter.status:
                raise ValidationFailed("pass the status in filter.status only")
            filter = dataclasses.replace(filter or ExecutionFilter(), status=[status])
        win = window(first, after, last, before, "datetime", "uuid")
        async with info.context.session() as s:
            service = ExecutionService(s)
            criteria = await execution_criteria(info, service, filter)
            page = await service.list_page(principal.tenant_id, criteria, win)
        nodes = [Execution.from_model(e) for e in page.items]
        base = Connection.build(nodes, page.cursors, page.has_next, page.has_previous)
        return ExecutionConnection(
            edges=base.edges,
            page_info=base.page_info,
            tenant_pk=principal.tenant_id,
            criteria=criteria,
        )

    @strawberry.field
    async def execution(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Execution:
        info.context.principal()
        return await load_execution_node(info, from_global_id(id, "Execution")[1])


@strawberry.input
class SendExecutionEventInput:
    execution_id: strawberry.ID
    name: str = strawberry.field(description="The event a `wait.event` step waits for.")
    payload: JSON | None = None


SendExecutionEventResult = Annotated[
    Execution | ValidationError | NotFoundError | ForbiddenError | ConflictError | UnavailableError,
    strawberry.union("SendExecutionEventResult"),
]


@strawberry.type
class ExecutionMutation:
    @strawberry.mutation(
        description="Deliver a named event (with a payload) to a running execution."
    )
    async def send_execution_event(
        self, info: strawberry.Info[Context, None], input: SendExecutionEventInput
    ) -> SendExecutionEventResult:
        ctx = info.context
        principal = ctx.principal()
        pk = from_global_id(input.execution_id, "Execution")[1]
        async with ctx.session() as s:
            execution = await ExecutionService(s).send_event(
                principal,
                pk,
                input.name,
                input.payload,
                temporal=ctx.deps.temporal,
                settings=ctx.deps.settings,
            )
        return Execution.from_model(execution)

    @strawberry.mutation(
        description="Validate params and start a template: your own or a platform one at its "
        "latest version, another publisher's at the version your admin accepted."
    )
    async def start_execution(
        self, info: strawberry.Info[Context, None], input: StartExecutionInput
    ) -> StartExecutionResult:
        ctx = info.context
        principal = ctx.principal()
        template_pk = (
            from_global_id(input.template_id, "Template")[1] if input.template_id else None
        )
        async with ctx.session() as s:
            execution = await ExecutionService(s).start(
                principal,
                StartRequest(
                    template_pk,
                    input.template_name,
                    input.params,
                    input.idempotency_key,
                    input.params_version,
                ),
                temporal=ctx.deps.temporal,
                publisher=ctx.deps.bus,
                settings=ctx.deps.settings,
            )
        return Execution.from_model(execution)


@strawberry.type
class ExecutionSubscription:
    @strawberry.subscription(
        description=(
            "Events of one execution: first those after afterSeq already recorded, then live "
            "ones, each once and in order; completes after the terminal event."
        )
    )
    async def execution_updates(
        self, info: strawberry.Info[Context, None], id: strawberry.ID, after_seq: int | None = None
    ) -> AsyncGenerator[ExecutionEvent, None]:
        ctx = info.context
        principal = ctx.principal()
        pk = from_global_id(id, "Execution")[1]
        async with ctx.session() as s:
            await ExecutionService(s).get(principal.tenant_id, pk)
        last = max(after_seq or 0, 0)
        poll = ctx.deps.settings.subscription_poll_seconds
        async with ctx.deps.bus.subscribe(channels.execution(pk)) as live:
            # Subscribed before reading PostgreSQL, so nothing falls between the two.
            while True:
                async with ctx.session() as s:
                    service = ExecutionService(s)
                    missed = await service.events_after(pk, last, CATCH_UP_BATCH)
                    status = (
                        (await service.get(principal.tenant_id, pk)).status if not missed else None
                    )
                for row in missed:
                    ctx.fresh_loaders()
                    yield ExecutionEvent.from_model(row)
                    last = row.seq
                    if row.type in TERMINAL_EVENTS:
                        return
                if status in TERMINAL:
                    return  # the terminal event was at or before afterSeq
                if len(missed) >= CATCH_UP_BATCH:
                    continue
                # Live events go straight through while they follow on; anything else
                # (a gap, a Resync after reconnect or overflow, a quiet period) re-reads PostgreSQL.
                while True:
                    item = await live.get(timeout=poll)
                    if not isinstance(item, Event) or int(item.data.get("seq", 0)) > last + 1:
                        break
                    if int(item.data["seq"]) <= last:
                        continue
                    ctx.fresh_loaders()
                    event = ExecutionEvent.from_message(item.data)
                    yield event
                    last = event.seq
                    if event.type.value in TERMINAL_EVENTS:
                        return
