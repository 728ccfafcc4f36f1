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
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import Priority
from temporalio.exceptions import WorkflowAlreadyStartedError

from app.db import SessionFactory
from app.executions.service import ExecutionService, Publisher, build_run_input, search_attributes
from app.executions.workflow_io import WORKFLOW_NAME, EventRecord
from app.metrics import EXECUTIONS_STARTED
from app.models import Execution, Template, TemplateVersion, Tenant
from app.settings import Settings
from app.templates.schemas import TemplateSpec

log = structlog.get_logger(__name__)
TIER_PRIORITY = {"enterprise": 1, "premium": 2, "pro": 3, "free": 4}
ACTIVE_STATUSES = ("RUNNING", "PAUSED")


@asynccontextmanager
async def tenant_lock(session: AsyncSession, tenant_id: uuid.UUID) -> AsyncIterator[None]:
    """Held until the session's transaction ends."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"admission:{tenant_id}"}
    )
    yield


async def active_count(session: AsyncSession, tenant_id: uuid.UUID) -> int:
    """Started and not finished: RUNNING, PAUSED, or PENDING with a workflow already started."""
    count = await session.scalar(
        select(func.count()).where(
            Execution.tenant_id == tenant_id,
            (Execution.status.in_(ACTIVE_STATUSES))
            | ((Execution.status == "PENDING") & Execution.run_id.is_not(None)),
        )
    )
    return int(count or 0)


def task_priority(tier: str, tenant_name: str) -> Priority:
    """Temporal task priority of a tenant's workflows: its tier's key, itself as fairness key."""
    return Priority(priority_key=TIER_PRIORITY.get(tier, 5), fairness_key=tenant_name)


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
) -> None:
    """Start the execution's workflow (its row must be committed) and set its run id."""
    try:
        handle = await temporal.start_workflow(
            WORKFLOW_NAME,
            build_run_input(execution, template_name, version_number, spec, settings),
            id=execution.workflow_id,
            task_queue=settings.temporal_task_queue,
            search_attributes=search_attributes(tenant_name, template_name, tier),
            priority=task_priority(tier, tenant_name),
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

    def limit(self, tier: str) -> int:
        return self.settings.tier_concurrency.get(tier, 1)

    async def admit(self, tenant_id: uuid.UUID) -> list[Execution]:
        """Start the tenant's oldest queued executions that fit under its limit."""
        tenant = await self.session.get(Tenant, tenant_id)
        if tenant is None:
            return []
        started: list[Execution] = []
        async with tenant_lock(self.session, tenant_id):
            free = self.limit(tenant.tier) - await active_count(self.session, tenant_id)
            if free <= 0:
                await self.session.commit()
                return []
            queued = list(
                await self.session.scalars(
                    select(Execution)
                    .where(
                        Execution.tenant_id == tenant_id,
                        Execution.status == "PENDING",
                        Execution.run_id.is_(None),
                    )
                    .order_by(Execution.created_at, Execution.id)
                    .limit(free)
                )
            )
            for execution in queued:
                version = await self.session.get(TemplateVersion, execution.template_version_id)
                template = await self.session.get(Template, execution.template_id)
                assert version is not None and template is not None
                await launch(
                    self.temporal,
                    execution,
                    tenant_name=tenant.name,
                    tier=tenant.tier,
                    template_name=template.name,
                    version_number=version.version,
                    spec=TemplateSpec.model_validate(version.spec),
                    settings=self.settings,
                )
                started.append(execution)
            await self.session.commit()
        for execution in started:
            log.info("execution.admitted", execution_id=str(execution.id), tenant=tenant.name)
        return started

    async def queue_if_full(self, execution: Execution, tier: str) -> bool:
        """Under the tenant lock: True (and a QUEUED event) when the tenant has no free slot.
        The caller starts the workflow while still holding the lock, then commits."""
        active = await active_count(self.session, execution.tenant_id)
        limit = self.limit(tier)
        if active < limit:
            return False
        ahead = await self.session.scalar(
            select(func.count()).where(
                Execution.tenant_id == execution.tenant_id,
                Execution.status == "PENDING",
                Execution.run_id.is_(None),
                Execution.created_at < execution.created_at,
            )
        )
        event, _ = await ExecutionService(self.session).record(
            EventRecord(
                str(execution.id),
                "queued",
                "QUEUED",
                "PENDING",
                0.0,
                message=f"waiting for a slot: {active} of {limit} running, {ahead or 0} ahead",
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
        tenants = list(
            await session.scalars(
                select(Execution.tenant_id)
                .where(Execution.status == "PENDING", Execution.run_id.is_(None))
                .distinct()
            )
        )
    admitted = 0
    for tenant_id in tenants:
        async with sessions() as session:
            admission = Admission(session, temporal, publisher, settings)
            admitted += len(await admission.admit(tenant_id))
    return admitted
