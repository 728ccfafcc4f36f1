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
from dataclasses import replace
from typing import Any

import structlog
from temporalio.client import Client

from app.errors import Conflict, Forbidden, NotFound, Unavailable
from app.executions.admission import (
    ABANDONED,
    CLAIMED,
    Admission,
    check_plugins,
    kept_outputs,
    run_number,
)
from app.executions.launcher import EngineUnavailable, Launcher, RunPlan, WorkflowGone
from app.executions.reconciler import Verdict, finish_lost
from app.executions.recorder import Publisher, Recorder
from app.executions.repository import ExecutionCriteria, ExecutionRepository
from app.executions.service import ExecutionService
from app.executions.workflow_io import PAUSE_SIGNAL, RESUME_SIGNAL, Control, EventRecord, run_key
from app.models import Execution
from app.models.states import ACTIVE, STATUSES, EventType, Status, is_queued
from app.settings import Settings
from app.templates.service import TemplateService, spec_of
from app.tenants.service import Principal

log = structlog.get_logger(__name__)
UNREACHABLE = "the workflow engine could not be reached; try again shortly"
GONE = "the execution's workflow is no longer running"


def actor_of(principal: Principal) -> str:
    """`<role>:<Principal.actor>`: `admin:key:<API key id>`, `operator:sub:<subject>`. Older
    events name a key without the `key:` (`admin:<API key id>`); they are kept as written."""
    return f"{principal.role}:{principal.actor}"


class ExecutionControl:
    def __init__(
        self, service: ExecutionService, temporal: Client, publisher: Publisher, settings: Settings
    ) -> None:
        self.service, self.temporal, self.publisher = service, temporal, publisher
        self.settings = settings
        self.session = service.session
        self.repo = ExecutionRepository(self.session)
        self.recorder = Recorder(self.session, publisher)
        self.launcher = Launcher(temporal, settings)

    def _admission(self) -> Admission:
        return Admission(self.session, self.temporal, self.publisher, self.settings, self.recorder)

    async def _load(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        if principal.role == "viewer":
            raise Forbidden("viewers cannot control executions")
        return await self.service.get(principal.tenant_id, execution_id)

    async def _signal(self, execution: Execution, signal: str, control: Control) -> None:
        try:
            await self.launcher.signal(execution, signal, control)
        except WorkflowGone as exc:
            raise Conflict(GONE) from exc
        except EngineUnavailable as exc:
            raise Unavailable(UNREACHABLE) from exc

    async def _cancel_workflow(self, execution: Execution) -> bool:
        """Cancel the execution's workflow; False when none runs (Temporal accepts a cancel
        of a closed workflow silently, so it is asked first)."""
        try:
            if not await self.launcher.running(execution):
                return False
            await self.launcher.cancel(execution)
        except WorkflowGone:
            return False
        except EngineUnavailable as exc:
            raise Unavailable(UNREACHABLE) from exc
        return True

    async def pause(
        self, principal: Principal, execution_id: uuid.UUID, reason: str | None
    ) -> Execution:
        execution = await self._load(principal, execution_id)
        if execution.status != Status.RUNNING:
            raise Conflict(
                f"only a RUNNING execution can be paused; this one is {execution.status}"
            )
        await self._signal(execution, PAUSE_SIGNAL, Control(actor_of(principal), reason))
        log.info("execution.pause_requested", execution_id=str(execution_id))
        return execution

    async def resume(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        execution = await self._load(principal, execution_id)
        if execution.status != Status.PAUSED:
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
        # Admission claims queued executions under this lock: holding it while deciding means
        # a queued execution is either cancelled here or already claimed, never both.
        await self.repo.lock_tenant_admission(execution.tenant_id)
        execution = await self.repo.lock(execution.id) or execution
        if execution.status not in ACTIVE:
            await self.recorder.rollback()  # and with it the tenant's lock
            raise Conflict(f"a {execution.status} execution cannot be cancelled")
        if is_queued(execution.status, execution.run_id):
            # It holds no slot and has no workflow: CANCELLED now, nobody is admitted.
            await self.recorder.record(
                EventRecord(
                    str(execution.id),
                    run_key(await run_number(self.session, execution.id), "cancelled"),
                    EventType.CANCELLED,
                    Status.CANCELLED,
                    execution.progress,
                    message=reason or "cancelled before it started",
                    payload=payload,
                )
            )
            await self.recorder.commit()
            log.info("execution.cancelled_queued", execution_id=str(execution.id), reason=reason)
            return execution
        _, execution = await self.recorder.record(
            EventRecord(
                str(execution.id),
                f"cancel-requested:{uuid.uuid4().hex[:12]}",
                EventType.CANCEL_REQUESTED,
                execution.status,
                execution.progress,
                message=reason or "cancelled by request",
                payload=payload,
            )
        )
        await self.recorder.commit()
        seen_run = execution.run_id
        if not await self._cancel_workflow(execution):
            # Nothing runs that could record the end (or, claimed, its workflow is still being
            # started: admission stops it once started): finish it now and free its slot.
            await self._finish_gone(execution, payload, reason, seen_run)
        log.info("execution.cancel_requested", execution_id=str(execution_id), reason=reason)
        return execution

    async def _finish_gone(
        self,
        execution: Execution,
        payload: dict[str, Any],
        reason: str | None,
        seen_run: str | None,
    ) -> None:
        current = await self.repo.lock(execution.id)
        if current is not None and current.run_id != seen_run:
            # Its workflow was started meanwhile (the claim became a run): cancel that run.
            await self.recorder.rollback()
            if await self._cancel_workflow(current):
                return
        verdict = Verdict(Status.CANCELLED, reason or "cancelled by request")
        done = await finish_lost(self.recorder, execution.id, verdict, payload)
        if done is not None and done[1].run_id == CLAIMED:
            # Its workflow is being started right now: that start will stop it.
            await self.repo.set_run_id(done[1], ABANDONED, claimed=CLAIMED)
        await self.recorder.commit()
        if done is not None:  # else it recorded its own end meanwhile
            await self._admission().admit(execution.tenant_id)

    async def cancel_many(
        self,
        principal: Principal,
        criteria: ExecutionCriteria,
        *,
        reason: str | None,
    ) -> list[Execution]:
        """Admins: cancel every active execution of the tenant that matches the filter (its
        statuses narrowed to the active ones). One that cannot be reached now is left out of
        the answer (and logged)."""
        if principal.role != "admin":
            raise Forbidden("only admins cancel executions in bulk")
        wanted = criteria.statuses if criteria.statuses is not None else STATUSES
        statuses = tuple(s for s in wanted if s in ACTIVE)
        ids = await self.repo.active_ids(principal.tenant_id, replace(criteria, statuses=statuses))
        cancelled = []
        for execution_id in ids:
            try:
                cancelled.append(await self.cancel(principal, execution_id, reason))
            except (Conflict, NotFound):
                await self.recorder.rollback()  # it ended meanwhile (and the lock goes)
                continue
            except Unavailable:
                await self.recorder.rollback()
                continue
        return cancelled

    async def retry(self, principal: Principal, execution_id: uuid.UUID) -> Execution:
        """Queue the next run of a FAILED execution and start it through admission now if
        a slot is free (tier limit, priority, fairness key), keeping the outputs of the steps
        that completed."""
        execution = await self._load(principal, execution_id)
        if execution.status != Status.FAILED:
            raise Conflict(
                f"only a FAILED execution can be retried; this one is {execution.status}"
            )
        # A retry reruns the version in the tenant's context: another publisher's version
        # only while a new start could run it (still visible, accepted, startable).
        await TemplateService(self.session).ensure_rerunnable(
            execution.tenant_id, execution.template_id, execution.template_version_id
        )
        # ...and only while the tenant may still use its plugins (as a new start).
        _, _, version = await self.repo.launch_facts(execution)
        await check_plugins(self.session, execution.tenant_id, spec_of(version), self.settings)
        admission = self._admission()
        await self.repo.lock_tenant_admission(execution.tenant_id)
        execution = await self.repo.lock(execution.id) or execution
        if execution.status != Status.FAILED:  # retried concurrently
            await self.recorder.rollback()  # and with it the tenant's lock
            raise Conflict(
                f"only a FAILED execution can be retried; this one is {execution.status}"
            )
        # The next run keeps the outputs of the steps this one completed.
        plan = RunPlan(
            await run_number(self.session, execution.id) + 1,
            await kept_outputs(self.session, execution.id),
        )
        _, execution = await self.recorder.record(
            EventRecord(
                str(execution.id),
                f"retried:{plan.number}",
                EventType.RETRIED,
                Status.PENDING,
                execution.progress,
                message=f"run {plan.number}: {len(plan.completed)} steps kept",
                payload={"actor": actor_of(principal), "kept": sorted(plan.completed)},
            )
        )
        execution.run_id = None  # queued for its next run
        claimed = await admission.claim(execution, principal.tier)
        launch = await admission.launch_of(execution, plan) if claimed else None
        await self.recorder.commit()
        if launch is not None:
            try:
                await admission.start(execution, launch)
            except EngineUnavailable as exc:
                # The retry is durable (queued again): the sweep starts it once Temporal answers.
                log.warning(
                    "execution.retry_start_deferred", execution_id=str(execution_id), error=str(exc)
                )
        log.info(
            "execution.retried",
            execution_id=str(execution_id),
            run=plan.number,
            kept=sorted(plan.completed),
        )
        return execution
