"""Steering executions: pause, resume, cancel (one or many) and retry.

Each checks the caller's role and the execution's state first (an impossible transition,
like resuming a completed execution, is a CONFLICT), then acts:
- pause and resume are signals (the workflow records PAUSED/RESUMED between steps, with the actor);
- cancel of a queued execution (PENDING, no workflow started) marks it CANCELLED at once, under
  the tenant's admission lock, so admission can never start it; an execution with a workflow
  records who asked and why, then cancels the workflow, which runs its compensations and records
  CANCELLED (a workflow Temporal no longer knows is finished CANCELLED here);
- retry puts a FAILED execution back in its tenant's queue: admission starts its next run (tier
  limit, priority, fairness key) keeping the outputs of the steps that completed.

Tenant-facing errors never carry Temporal's own text (it can name internal hosts and ids): the
detail is logged, the caller gets a plain sentence.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from app.errors import Conflict, Forbidden, NotFound, Unavailable
from app.executions.admission import (
    Admission,
    RunPlan,
    kept_outputs,
    run_number,
    tenant_lock,
)
from app.executions.reconciler import Verdict, finish_lost
from app.executions.repository import ExecutionRepository
from app.executions.service import ExecutionService, Publisher
from app.executions.workflow_io import PAUSE_SIGNAL, RESUME_SIGNAL, Control, EventRecord, run_key
from app.models import Execution
from app.settings import Settings
from app.templates.service import TemplateService
from app.tenants.service import Principal

log = structlog.get_logger(__name__)
ACTIVE = ("PENDING", "RUNNING", "PAUSED")
UNREACHABLE = "the workflow engine could not be reached; try again shortly"
GONE = "the execution's workflow is no longer running"


def actor_of(principal: Principal) -> str:
    return f"{principal.role}:{principal.key_id}"


def never_started(execution: Execution) -> bool:
    """Queued: admission has not started a workflow for its current run."""
    return execution.status == "PENDING" and execution.run_id is None


class ExecutionControl:
    def __init__(
        self, service: ExecutionService, temporal: Client, publisher: Publisher, settings: Settings
    ) -> None:
        self.service, self.temporal, self.publisher = service, temporal, publisher
        self.settings = settings
        self.session = service.session
        self.repo = ExecutionRepository(self.session)

    def _admission(self) -> Admission:
        return Admission(self.session, self.temporal, self.publisher, self.settings)

    async def _load(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        if principal.role == "viewer":
            raise Forbidden("viewers cannot control executions")
        return await self.service.get(principal.tenant_id, execution_id)

    async def _on_workflow(
        self,
        execution: Execution,
        action: str,
        call: Callable[[WorkflowHandle[Any, Any]], Awaitable[None]],
    ) -> bool:
        """Run `call` on the execution's workflow; False when Temporal no longer knows it
        (never started, closed, or lost). Any other failure is logged in full and answered
        UNAVAILABLE without Temporal's text."""
        try:
            await call(self.temporal.get_workflow_handle(execution.workflow_id))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            log.warning(
                "execution.control_failed",
                execution_id=str(execution.id),
                action=action,
                status=exc.status.name,
                error=exc.message,
            )
            raise Unavailable(UNREACHABLE) from exc
        except RuntimeError as exc:  # temporalio raises this when it cannot connect at all
            log.warning(
                "execution.control_failed",
                execution_id=str(execution.id),
                action=action,
                error=str(exc),
            )
            raise Unavailable(UNREACHABLE) from exc
        return True

    async def _workflow_running(self, execution: Execution) -> bool:
        status: list[WorkflowExecutionStatus | None] = []

        async def describe(handle: WorkflowHandle[Any, Any]) -> None:
            status.append((await handle.describe()).status)

        return await self._on_workflow(execution, "describe", describe) and status[0] in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.CONTINUED_AS_NEW,  # the chain runs on in a newer run
        )

    async def _signal(self, execution: Execution, signal: str, control: Control) -> None:
        async def send(handle: WorkflowHandle[Any, Any]) -> None:
            await handle.signal(signal, control)

        if not await self._on_workflow(execution, signal, send):
            raise Conflict(GONE)

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
        payload = {"actor": actor_of(principal), "reason": reason}
        # Admission starts queued executions under this lock: holding it while deciding
        # means a queued execution is either cancelled here or already started, never both.
        async with tenant_lock(self.session, execution.tenant_id):
            execution = await self.repo.lock(execution.id) or execution
            if execution.status not in ACTIVE:
                raise Conflict(f"a {execution.status} execution cannot be cancelled")
            if never_started(execution):
                return await self._cancel_queued(execution, payload, reason)
            event, execution = await self.service.record(
                EventRecord(
                    str(execution.id),
                    f"cancel-requested:{uuid.uuid4().hex[:12]}",
                    "CANCEL_REQUESTED",
                    execution.status,
                    execution.progress,
                    message=reason or "cancelled by request",
                    payload=payload,
                )
            )
            await self.session.commit()
        await ExecutionService.publish_event(self.publisher, event, execution)

        async def cancel(handle: WorkflowHandle[Any, Any]) -> None:
            await handle.cancel()

        # Temporal accepts a cancel of a closed workflow silently: ask first.
        if not (
            await self._workflow_running(execution)
            and await self._on_workflow(execution, "cancel", cancel)
        ):
            # Nothing runs that could record the end: finish it now and free its slot.
            await self._finish_gone(execution, payload, reason)
        log.info("execution.cancel_requested", execution_id=str(execution_id), reason=reason)
        return execution

    async def _cancel_queued(
        self, execution: Execution, payload: dict[str, Any], reason: str | None
    ) -> Execution:
        """Under the tenant lock: CANCELLED now; it holds no slot, so nobody is admitted."""
        event, execution = await self.service.record(
            EventRecord(
                str(execution.id),
                run_key(await run_number(self.session, execution.id), "cancelled"),
                "CANCELLED",
                "CANCELLED",
                execution.progress,
                message=reason or "cancelled before it started",
                payload=payload,
            )
        )
        await self.session.commit()
        await ExecutionService.publish_event(self.publisher, event, execution)
        log.info("execution.cancelled_queued", execution_id=str(execution.id), reason=reason)
        return execution

    async def _finish_gone(
        self, execution: Execution, payload: dict[str, Any], reason: str | None
    ) -> None:
        verdict = Verdict("CANCELLED", reason or "cancelled by request")
        done = await finish_lost(self.session, execution.id, verdict, payload)
        if done is None:  # it recorded its own end meanwhile
            await self.session.commit()
            return
        await self.session.commit()
        await ExecutionService.publish_event(self.publisher, *done)
        await self._admission().admit(execution.tenant_id)

    async def cancel_many(
        self,
        principal: Principal,
        *,
        status: str | None,
        template_name: str | None,
        reason: str | None,
    ) -> list[Execution]:
        """Admins: cancel every active execution of the tenant that matches the filter.
        One that cannot be reached now is left out of the answer (and logged)."""
        if principal.role != "admin":
            raise Forbidden("only admins cancel executions in bulk")
        statuses = ACTIVE if status is None else tuple(s for s in ACTIVE if s == status)
        ids = await self.repo.active_ids(principal.tenant_id, statuses, template_name)
        cancelled = []
        for execution_id in ids:
            try:
                cancelled.append(await self.cancel(principal, execution_id, reason))
            except (Conflict, NotFound):
                continue  # it ended meanwhile
            except Unavailable:
                await self.session.rollback()
                continue
        return cancelled

    async def retry(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        """Queue the next run of a FAILED execution; admission starts it when a slot is free."""
        execution = await self._load(principal, execution_id)
        if execution.status != "FAILED":
            raise Conflict(
                f"only a FAILED execution can be retried; this one is {execution.status}"
            )
        # A retry reruns the version in the tenant's context: another publisher's version
        # only while a new start could run it (still visible, accepted, startable).
        await TemplateService(self.session).ensure_rerunnable(
            execution.tenant_id, execution.template_id, execution.template_version_id
        )
        async with tenant_lock(self.session, execution.tenant_id):
            execution = await self.repo.lock(execution.id) or execution
            if execution.status != "FAILED":  # retried concurrently
                raise Conflict(
                    f"only a FAILED execution can be retried; this one is {execution.status}"
                )
            # The next run keeps the outputs of the steps this one completed.
            plan = RunPlan(
                await run_number(self.session, execution.id) + 1,
                await kept_outputs(self.session, execution.id),
            )
            event, execution = await self.service.record(
                EventRecord(
                    str(execution.id),
                    f"retried:{plan.number}",
                    "RETRIED",
                    "PENDING",
                    execution.progress,
                    message=f"run {plan.number}: {len(plan.completed)} steps kept",
                    payload={"actor": actor_of(principal), "kept": sorted(plan.completed)},
                )
            )
            execution.run_id = None  # queued again: admission starts the new run
            await self.session.commit()
        await ExecutionService.publish_event(self.publisher, event, execution)
        try:
            await self._admission().start_or_queue(
                execution, principal.tenant_name, principal.tier, plan
            )
        except (RPCError, RuntimeError) as exc:
            # The retry is durable (queued): the admission sweep starts it once Temporal answers.
            await self.session.rollback()
            log.warning(
                "execution.retry_start_deferred", execution_id=str(execution_id), error=str(exc)
            )
        log.info(
            "execution.retried",
            execution_id=str(execution_id),
            run=run_number,
            kept=sorted(plan.completed),
        )
        return execution
