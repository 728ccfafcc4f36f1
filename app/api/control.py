"""Execution control mutations: pause, resume, cancel (one or many) and retry."""

from __future__ import annotations

from typing import Annotated

import strawberry

from app.api.context import Context
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from app.api.executions import Execution, ExecutionFilter, execution_criteria
from app.api.relay import from_global_id
from app.executions.control import ExecutionControl
from app.executions.service import ExecutionService

ControlResult = Annotated[
    Execution | NotFoundError | ForbiddenError | ConflictError | UnavailableError,
    strawberry.union("ExecutionControlResult"),
]


@strawberry.type
class CancelledExecutions:
    count: int
    executions: list[Execution]


CancelManyResult = Annotated[
    CancelledExecutions | ValidationError | ForbiddenError,
    strawberry.union("CancelExecutionsResult"),
]


async def _control(
    info: strawberry.Info[Context, None], id: strawberry.ID, action: str, reason: str | None = None
) -> ControlResult:
    ctx = info.context
    principal = ctx.principal()
    pk = from_global_id(id, "Execution")[1]
    async with ctx.session() as s:
        control = ExecutionControl(
            ExecutionService(s), ctx.deps.temporal, ctx.deps.bus, ctx.deps.settings
        )
        if action == "pause":
            execution = await control.pause(principal, pk, reason)
        elif action == "resume":
            execution = await control.resume(principal, pk)
        elif action == "cancel":
            execution = await control.cancel(principal, pk, reason)
        else:
            execution = await control.retry(principal, pk)
    return Execution.from_model(execution)


@strawberry.type
class ControlMutation:
    @strawberry.mutation(description="Pause between steps (running steps finish); RUNNING only.")
    async def pause_execution(
        self, info: strawberry.Info[Context, None], id: strawberry.ID, reason: str | None = None
    ) -> ControlResult:
        return await _control(info, id, "pause", reason)

    @strawberry.mutation(description="Continue a PAUSED execution.")
    async def resume_execution(
        self, info: strawberry.Info[Context, None], id: strawberry.ID
    ) -> ControlResult:
        return await _control(info, id, "resume")

    @strawberry.mutation(
        description="Cancel: compensations run, then CANCELLED; who and why are recorded."
    )
    async def cancel_execution(
        self, info: strawberry.Info[Context, None], id: strawberry.ID, reason: str | None = None
    ) -> ControlResult:
        return await _control(info, id, "cancel", reason)

    @strawberry.mutation(
        description="Continue a FAILED execution from its failed step, keeping completed outputs."
    )
    async def retry_execution(
        self, info: strawberry.Info[Context, None], id: strawberry.ID
    ) -> ControlResult:
        return await _control(info, id, "retry")

    @strawberry.mutation(
        description="Admins: cancel every active execution matching the filter "
        "(the filter of `executions`; its statuses narrowed to PENDING, RUNNING, PAUSED)."
    )
    async def cancel_executions(
        self,
        info: strawberry.Info[Context, None],
        filter: ExecutionFilter | None = None,
        reason: str | None = None,
    ) -> CancelManyResult:
        ctx = info.context
        principal = ctx.principal()
        async with ctx.session() as s:
            service = ExecutionService(s)
            criteria = await execution_criteria(info, service, filter)
            control = ExecutionControl(service, ctx.deps.temporal, ctx.deps.bus, ctx.deps.settings)
            done = await control.cancel_many(principal, criteria, reason=reason)
        return CancelledExecutions(
            count=len(done), executions=[Execution.from_model(e) for e in done]
        )
