"""Fair admission: per-tenant concurrency limits by tier, started in arrival order.

A tenant may have at most `TIER_CONCURRENCY[tier]` executions started and not finished.
Past that a new execution stays PENDING (a `QUEUED` event says so; `queueStatus` counts it)
and is started, oldest first, as soon as one of the tenant's executions ends (the worker's
event recorder calls `admit`) or by the worker's periodic sweep. A PostgreSQL advisory lock
per tenant makes counting and starting atomic, so concurrent starts cannot exceed the limit.

Started workflows carry Temporal's task priority by tier (`task_priority`: enterprise 1 ...
free 4, lower first) and the tenant as fairness key; their activities inherit both. Verified
on the embedded dev server (Server 1.32, tests/workers/test_temporal_priority.py): priority
ordering is on by default (`matching.useNewMatcher`) but holds only within one task queue
partition (4 by default), and fairness between tenants needs `matching.enableFairness: true`;
the embedded server sets both that and one partition per queue (`DISPATCH_DYNAMIC_CONFIG` in
app/embedded/temporal.py). There an enterprise tenant's backlogged tasks are dispatched before
a free tier's, and tenants of one tier alternate. Other servers (production) need
`matching.enableFairness` in their dynamic config for the fairness half and, with several
partitions, order priorities only approximately; wherever they do not, the per-tenant limit
above is what keeps a free tenant's flood from starving others.

Retries are admitted like new executions: `retryExecution` puts the execution back in the
queue (PENDING, no run id) and `launch` starts its next run with the plan `run_plan` derives
from the audit trail (the run number from RETRIED events, the kept outputs from the steps
that completed). Only PENDING executions without a workflow are ever started: cancelling a
queued one (app/executions/control.py) takes the same tenant lock and marks it CANCELLED.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import Priority, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from app.db import SessionFactory
from app.executions.repository import ExecutionRepository
from app.executions.service import ExecutionService, Publisher, build_run_input, search_attributes
from app.executions.workflow_io import WORKFLOW_NAME, EventRecord, run_key
from app.metrics import EXECUTIONS_STARTED
from app.models import Execution, Template, TemplateVersion, Tenant
from app.settings import Settings
from app.templates.schemas import TemplateSpec

log = structlog.get_logger(__name__)
TIER_PRIORITY = {"enterprise": 1, "premium": 2, "pro": 3, "free": 4}


@asynccontextmanager
async def tenant_lock(session: AsyncSession, tenant_id: uuid.UUID) -> AsyncIterator[None]:
    """Held until the session's transaction ends."""
    await ExecutionRepository(session).lock_tenant_admission(tenant_id)
    yield


def task_priority(tier: str, tenant_name: str) -> Priority:
    """Temporal task priority of a tenant's workflows: its tier's key, itself as fairness key."""
    return Priority(priority_key=TIER_PRIORITY.get(tier, 5), fairness_key=tenant_name)


@dataclass
class RunPlan:
    """Which run of an execution starts next, and the step outputs it keeps."""

    number: int = 1
    completed: dict[str, Any] = field(default_factory=dict)


async def run_number(session: AsyncSession, execution_id: uuid.UUID) -> int:
    """The execution's current run: 1, plus one per RETRIED event."""
    return 1 + await ExecutionRepository(session).retry_count(execution_id)


async def run_plan(session: AsyncSession, execution_id: uuid.UUID) -> RunPlan:
    """The plan of the execution's current run, from its audit trail: its run number, keeping
    every step whose output a STEP_COMPLETED event holds and that was not compensated since
    (undone steps run again)."""
    number = await run_number(session, execution_id)
    if number == 1:
        return RunPlan()
    return RunPlan(number, await kept_outputs(session, execution_id))


async def kept_outputs(session: AsyncSession, execution_id: uuid.UUID) -> dict[str, Any]:
    """{step id: output} of every step that completed and was not compensated since."""
    completed: dict[str, Any] = {}
    for event in await ExecutionRepository(session).step_outcomes(execution_id):
        assert event.step_id is not None
        if event.type == "STEP_COMPENSATED":
            completed.pop(event.step_id, None)
        elif "output" in (event.payload or {}):  # too large to keep: that step runs again
            completed[event.step_id] = event.payload["output"]
    return completed


async def launch(
    temporal: Client,
    execution: Execution,
    *,
    tenant_name: str,
    tier: str,
    template_name: str,
    version_number: int,
    spec: TemplateSpec,
    settings: Settings,
    plan: RunPlan | None = None,
) -> None:
    """Start the execution's workflow (its row must be committed) and set its run id."""
    plan = plan or RunPlan()
    try:
        handle = await temporal.start_workflow(
            WORKFLOW_NAME,
            build_run_input(
                execution,
                template_name,
                version_number,
                spec,
                settings,
                run_number=plan.number,
                completed=plan.completed,
            ),
            id=execution.workflow_id,
            task_queue=settings.temporal_task_queue,
            search_attributes=search_attributes(tenant_name, template_name, tier),
            priority=task_priority(tier, tenant_name),
            # A retry reuses the workflow id. Its previous run recorded FAILED as its last act
            # and may still be closing; only that run can be open here, so end it rather than
            # lose the retry to WorkflowAlreadyStartedError.
            id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING
            if plan.number > 1
            else WorkflowIDConflictPolicy.FAIL,
        )
        execution.run_id = handle.first_execution_run_id
    except WorkflowAlreadyStartedError:
        execution.run_id = execution.run_id or "already-started"
    EXECUTIONS_STARTED.labels(tier).inc()


class Admission:
    def __init__(
        self, session: AsyncSession, temporal: Client, publisher: Publisher, settings: Settings
    ) -> None:
        self.session, self.temporal = session, temporal
        self.publisher, self.settings = publisher, settings
        self.repo = ExecutionRepository(session)

    def limit(self, tier: str) -> int:
        return self.settings.tier_concurrency.get(tier, 1)

    async def admit(self, tenant_id: uuid.UUID) -> list[Execution]:
        """Start the tenant's oldest queued executions that fit under its limit."""
        tenant = await self.session.get(Tenant, tenant_id)
        if tenant is None:
            return []
        started: list[Execution] = []
        async with tenant_lock(self.session, tenant_id):
            free = self.limit(tenant.tier) - await self.repo.started_count(tenant_id)
            if free <= 0:
                await self.session.commit()
                return []
            # Only PENDING executions without a workflow: cancelled ones (marked under this
            # lock) and started ones are never started (again).
            for execution in await self.repo.queued(tenant_id, free):
                await self._launch(execution, tenant.name, tenant.tier)
                started.append(execution)
            await self.session.commit()
        for execution in started:
            log.info("execution.admitted", execution_id=str(execution.id), tenant=tenant.name)
        return started

    async def _launch(
        self, execution: Execution, tenant_name: str, tier: str, plan: RunPlan | None = None
    ) -> None:
        version = await self.session.get(TemplateVersion, execution.template_version_id)
        template = await self.session.get(Template, execution.template_id)
        assert version is not None and template is not None
        await launch(
            self.temporal,
            execution,
            tenant_name=tenant_name,
            tier=tier,
            template_name=template.name,
            version_number=version.version,
            spec=TemplateSpec.model_validate(version.spec),
            settings=self.settings,
            plan=plan or await run_plan(self.session, execution.id),
        )

    async def start_or_queue(
        self, execution: Execution, tenant_name: str, tier: str, plan: RunPlan | None = None
    ) -> bool:
        """Start a committed, waiting execution now if its tenant has a free slot, else leave
        it queued (with a QUEUED event) for `admit`. True when this call started it. `plan`:
        the run it starts, when the caller has it (else read from the audit trail)."""
        async with tenant_lock(self.session, execution.tenant_id):
            if await self.queue_if_full(execution, tier):
                return False
            await self._launch(execution, tenant_name, tier, plan)
            await self.session.commit()
        log.info("execution.admitted", execution_id=str(execution.id), tenant=tenant_name)
        return True

    async def queue_if_full(self, execution: Execution, tier: str) -> bool:
        """Under the tenant lock: True when the caller must not start the execution: it has
        no free slot (a QUEUED event says so), or it no longer waits to start (cancelled, or
        started by the admission sweep meanwhile). The caller starts the workflow while
        still holding the lock, then commits."""
        await self.session.refresh(execution)
        if execution.status != "PENDING" or execution.run_id is not None:
            return True
        active = await self.repo.started_count(execution.tenant_id)
        limit = self.limit(tier)
        if active < limit:
            return False
        ahead = await self.repo.queued_ahead(execution)
        event, _ = await ExecutionService(self.session).record(
            EventRecord(
                str(execution.id),
                run_key(await run_number(self.session, execution.id), "queued"),
                "QUEUED",
                "PENDING",
                execution.progress,
                message=f"waiting for a slot: {active} of {limit} running, {ahead} ahead",
            )
        )
        await self.session.commit()
        await ExecutionService.publish_event(self.publisher, event, execution)
        return True


async def sweep(
    sessions: SessionFactory, temporal: Client, publisher: Publisher, settings: Settings
) -> int:
    """Admit queued executions of every tenant that has some (after a crash, or a lost event)."""
    async with sessions() as session:
        tenants = await ExecutionRepository(session).tenants_with_queue()
    admitted = 0
    for tenant_id in tenants:
        async with sessions() as session:
            admission = Admission(session, temporal, publisher, settings)
            admitted += len(await admission.admit(tenant_id))
    return admitted
