"""Steering running executions: pause, resume, cancel (one or many) and retry.

Each checks the caller's role and the execution's state first (an impossible transition,
like resuming a completed execution, is a CONFLICT), then tells the workflow: pause and
resume are signals (the workflow records PAUSED/RESUMED between steps, with the actor);
cancel records who asked and why, then cancels the workflow, which runs its compensations and
records CANCELLED; retry starts a new run of a FAILED execution that keeps the outputs of the
steps that completed (from their STEP_COMPLETED events) and continues from the failed step.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import select
from temporalio.client import Client
from temporalio.service import RPCError

from app.errors import Conflict, Forbidden, NotFound, Unavailable
from app.executions.service import (
    ExecutionService,
    Publisher,
    build_run_input,
    search_attributes,
)
from app.executions.workflow_io import (
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    WORKFLOW_NAME,
    Control,
    EventRecord,
)
from app.models import Execution, ExecutionEvent, Template, TemplateVersion
from app.settings import Settings
from app.templates.schemas import TemplateSpec
from app.tenants.service import Principal

log = structlog.get_logger(__name__)
ACTIVE = ("PENDING", "RUNNING", "PAUSED")


def actor_of(principal: Principal) -> str:
    return f"{principal.role}:{principal.key_id}"


class ExecutionControl:
    def __init__(self, service: ExecutionService, temporal: Client, publisher: Publisher) -> None:
        self.service, self.temporal, self.publisher = service, temporal, publisher
        self.session = service.session

    async def _load(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        if principal.role == "viewer":
            raise Forbidden("viewers cannot control executions")
        return await self.service.get(principal.tenant_id, execution_id)

    async def _signal(self, execution: Execution, signal: str, control: Control) -> None:
        try:
            await self.temporal.get_workflow_handle(execution.workflow_id).signal(signal, control)
        except RPCError as exc:
            raise Unavailable(f"could not reach the workflow: {exc.message}") from exc

    async def pause(
        self, principal: Principal, execution_id: uuid.UUID, reason: str | None
    ) -> Execution:
        execution = await self._load(principal, execution_id)
        if execution.status != "RUNNING":
            raise Conflict(
                f"only a RUNNING execution can be paused; this one is {execution.status}"
            )
        await self._signal(execution, PAUSE_SIGNAL, Control(actor_of(principal), reason))
        log.info("execution.pause_requested", execution_id=str(execution_id))
        return execution

    async def resume(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        execution = await self._load(principal, execution_id)
        if execution.status != "PAUSED":
            raise Conflict(
                f"only a PAUSED execution can be resumed; this one is {execution.status}"
            )
        await self._signal(execution, RESUME_SIGNAL, Control(actor_of(principal)))
        return execution

    async def cancel(
        self, principal: Principal, execution_id: uuid.UUID, reason: str | None
    ) -> Execution:
        execution = await self._load(principal, execution_id)
        if execution.status not in ACTIVE:
            raise Conflict(f"a {execution.status} execution cannot be cancelled")
        event, execution = await self.service.record(
            EventRecord(
                str(execution.id),
                f"cancel-requested:{uuid.uuid4().hex[:12]}",
                "CANCEL_REQUESTED",
                execution.status,
                execution.progress,
                message=reason or "cancelled by request",
                payload={"actor": actor_of(principal), "reason": reason},
            )
        )
        await self.session.commit()
        await ExecutionService.publish_event(self.publisher, event, execution)
        try:
            await self.temporal.get_workflow_handle(execution.workflow_id).cancel()
        except RPCError as exc:
            raise Unavailable(f"could not reach the workflow: {exc.message}") from exc
        log.info("execution.cancel_requested", execution_id=str(execution_id), reason=reason)
        return execution

    async def cancel_many(
        self,
        principal: Principal,
        *,
        status: str | None,
        template_name: str | None,
        reason: str | None,
    ) -> list[Execution]:
        """Admins: cancel every active execution of the tenant that matches the filter."""
        if principal.role != "admin":
            raise Forbidden("only admins cancel executions in bulk")
        query = select(Execution).where(
            Execution.tenant_id == principal.tenant_id, Execution.status.in_(ACTIVE)
        )
        if status is not None:
            query = query.where(Execution.status == status)
        if template_name is not None:
            query = query.join(Template, Template.id == Execution.template_id).where(
                Template.name == template_name
            )
        ids = [e.id for e in await self.session.scalars(query.order_by(Execution.created_at))]
        cancelled = []
        for execution_id in ids:
            try:
                cancelled.append(await self.cancel(principal, execution_id, reason))
            except Conflict:
                continue  # it ended meanwhile
        return cancelled

    async def retry(
        self, principal: Principal, execution_id: uuid.UUID, settings: Settings
    ) -> Execution:
        execution = await self._load(principal, execution_id)
        if execution.status != "FAILED":
            raise Conflict(
                f"only a FAILED execution can be retried; this one is {execution.status}"
            )
        version = await self.session.get(TemplateVersion, execution.template_version_id)
        template = await self.session.get(Template, execution.template_id)
        if version is None or template is None:
            raise NotFound("the execution's template version is gone")
        events = list(
            await self.session.scalars(
                select(ExecutionEvent).where(ExecutionEvent.execution_id == execution.id)
            )
        )
        run_number = 1 + sum(e.type == "RETRIED" for e in events) + 1
        completed: dict[str, Any] = {}
        for e in events:
            if e.type == "STEP_COMPLETED" and e.step_id and "output" in (e.payload or {}):
                completed[e.step_id] = e.payload["output"]
            elif e.type in ("STEP_COMPENSATED",) and e.step_id:
                completed.pop(e.step_id, None)  # undone: it must run again
        event, execution = await self.service.record(
            EventRecord(
                str(execution.id),
                f"retried:{run_number}",
                "RETRIED",
                "PENDING",
                execution.progress,
                message=f"run {run_number}: {len(completed)} steps kept",
                payload={"actor": actor_of(principal), "kept": sorted(completed)},
            )
        )
        await self.session.commit()
        await ExecutionService.publish_event(self.publisher, event, execution)
        spec = TemplateSpec.model_validate(version.spec)
        run_input = build_run_input(
            execution,
            template.name,
            version.version,
            spec,
            settings,
            run_number=run_number,
            completed=completed,
        )
        try:
            handle = await self.temporal.start_workflow(
                WORKFLOW_NAME,
                run_input,
                id=execution.workflow_id,
                task_queue=settings.temporal_task_queue,
                search_attributes=search_attributes(
                    principal.tenant_name, template.name, principal.tier
                ),
            )
        except RPCError as exc:
            raise Unavailable(f"could not start the retry: {exc.message}") from exc
        execution.run_id = handle.first_execution_run_id
        await self.session.commit()
        log.info(
            "execution.retried",
            execution_id=str(execution_id),
            run=run_number,
            kept=sorted(completed),
        )
        return execution
