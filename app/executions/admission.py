"""Admission: the one path by which an execution's run starts, under its tenant's limit.

A tenant may have at most `tier_concurrency[tier]` executions holding a slot
(states.holds_slot). Every run starts the same way, whether it is a new execution
(ExecutionService.start), a retry (ExecutionControl.retry) or a queued one whose turn came
(`admit`, called when an execution ends and by the worker's periodic sweep):

1. `claim`, in the caller's transaction: take the tenant's admission lock (a PostgreSQL
   advisory lock held until that transaction ends), count the slots held, and either claim
   one for the execution (its run id becomes `CLAIMED`, which counts as holding a slot) or
   leave it queued with a QUEUED event. Only local statements run under the lock: it is held
   for milliseconds, never across a network call, so one tenant's starts do not queue
   behind each other's Temporal round trips.
2. the caller commits (the Recorder publishes CREATED/RETRIED/QUEUED after commit);
3. `start`: the launcher starts the workflow, with no lock or transaction held, and the run id
   it returns replaces the claim (one UPDATE). If Temporal refuses or cannot be reached, the
   claim is released (queued again: the sweep starts it once Temporal answers) or, for a new
   execution whose caller is waiting, the execution is marked FAILED and the caller told.

Queued executions are started oldest first. Started workflows carry Temporal's task priority
by tier (launcher.task_priority: enterprise 1 ... free 4, lower first) and the tenant as
fairness key; their activities inherit both. Verified on the embedded dev server (Server
1.32, tests/workers/test_temporal_priority.py): priority ordering is on by default
(`matching.useNewMatcher`) but holds only within one task queue partition (4 by default), and
fairness between tenants needs `matching.enableFairness: true`; the embedded server sets both
that and one partition per queue (`DISPATCH_DYNAMIC_CONFIG` in app/embedded/temporal.py).
Other servers (production) need `matching.enableFairness` in their dynamic config for the
fairness half; wherever they do not, the per-tenant limit is what keeps a free tenant's flood
from starving others.

Plugins: a version that uses plugin steps or AI tasks runs only while the tenant may use those
plugins and this deployment loads them (`check_plugins`; a switch may change after publishing,
or while an execution waits). A new start and a retry check it before anything is recorded
(FORBIDDEN or CONFLICT to the caller); `admit` checks each queued execution before it claims
a slot for it, and one refused then ends FAILED with the reason (its retry checks again).

A retry's next run is planned from the audit trail (`run_plan`: the run number from RETRIED
events, the kept outputs from the steps that completed and were not compensated since).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from app.db import SessionFactory
from app.errors import Conflict, Forbidden
from app.executions.launcher import EngineUnavailable, Launch, Launcher, RunPlan
from app.executions.recorder import Publisher, Recorder
from app.executions.repository import ExecutionRepository
from app.executions.workflow_io import EventRecord, run_key
from app.models import Execution
from app.models.states import EventType, Status, is_queued
from app.settings import Settings
from app.templates.checks import plugin_refusal, plugins_used
from app.templates.schemas import TemplateSpec
from app.templates.service import spec_of
from app.tenants.plugin_access import PluginAccessService

log = structlog.get_logger(__name__)
# The run id of an execution whose slot is claimed and whose workflow is being started.
CLAIMED = "claimed"
# ...and of one cancelled in that moment, before its workflow could be reached: the start
# that then gets through finds this instead of its claim and cancels the run it began.
ABANDONED = "abandoned"
# Executions one `admit` claims and starts one after another; more wait for the next event or
# sweep (each start is a Temporal round trip, and admit runs inside a recording activity).
ADMIT_AT_ONCE = 50


@dataclass(frozen=True)
class Claimed:
    """A claimed execution and what its start needs (read under the lock, used after it)."""

    execution: Execution
    launch: Launch


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
        if event.type == EventType.STEP_COMPENSATED:
            completed.pop(event.step_id, None)
        elif "output" in (event.payload or {}):  # too large to keep: that step runs again
            completed[event.step_id] = event.payload["output"]
    return completed


async def check_plugins(
    session: AsyncSession, tenant_id: uuid.UUID, spec: TemplateSpec, settings: Settings | None
) -> None:
    """A version using plugin steps or AI tasks runs only while the tenant may use those
    plugins (Forbidden) and this deployment loads them (Conflict): either may have changed
    since it was published. Every run's start checks it: new, retried and queued ones."""
    used = plugins_used(spec)
    if not used:
        return
    access = await PluginAccessService(session).of(tenant_id, settings)
    for plugin, name in used.items():
        if plugin.startswith("?"):
            raise Conflict(
                f"this template uses {name!r}, which this deployment does not offer "
                "(a plugin that is not loaded?)"
            )
        if not access.allows(plugin):
            raise Forbidden(plugin_refusal(name, plugin))


class Admission:
    def __init__(
        self,
        session: AsyncSession,
        temporal: Client,
        publisher: Publisher,
        settings: Settings,
        recorder: Recorder | None = None,
    ) -> None:
        self.session, self.settings = session, settings
        self.recorder = recorder or Recorder(session, publisher)
        self.launcher = Launcher(temporal, settings)
        self.repo = ExecutionRepository(session)

    def limit(self, tier: str) -> int:
        return self.settings.tier_concurrency.get(tier, 1)

    async def claim(self, execution: Execution, tier: str) -> bool:
        """In the caller's transaction: claim one of the tenant's slots for a waiting
        execution (True), or record that it waits (False, a QUEUED event). The tenant's lock
        is held until the caller commits; the caller then `start`s what it claimed."""
        assert is_queued(execution.status, execution.run_id), execution.status
        await self.repo.lock_tenant_admission(execution.tenant_id)
        active = await self.repo.started_count(execution.tenant_id)
        limit = self.limit(tier)
        if active < limit:
            execution.run_id = CLAIMED
            return True
        ahead = await self.repo.queued_ahead(execution)
        await self.recorder.record(
            EventRecord(
                str(execution.id),
                run_key(await run_number(self.session, execution.id), "queued"),
                EventType.QUEUED,
                Status.PENDING,
                execution.progress,
                message=f"waiting for a slot: {active} of {limit} running, {ahead} ahead",
            )
        )
        return False

    async def start(self, execution: Execution, launch: Launch, *, requeue: bool = True) -> None:
        """Start the claimed (and committed) execution's workflow and record its run id.
        Raises EngineUnavailable; with `requeue` the claim is released first (queued again,
        for the sweep), else it is the caller's to end the execution (which frees the slot)."""
        try:
            run_id = await self.launcher.start(execution, launch)
        except EngineUnavailable:
            if requeue:
                await self.release(execution)
            raise
        # The run keeps the tier it was started at (priority and limits were that tier's).
        tier = launch.tier
        recorded = await self.repo.set_run_id(execution, run_id, claimed=CLAIMED, tier=tier)
        found = None if recorded else await self.repo.run_id_of(execution.id)
        if not recorded and found is None:
            # The reconciler took this slow start for a dead one and queued it again: the run
            # exists, so the execution keeps it (a second start would find it started).
            recorded = await self.repo.set_run_id(execution, run_id, claimed=None, tier=tier)
        await self.session.commit()
        if not recorded and found == ABANDONED:
            # Cancelled while its workflow was being started (control finished it and marked
            # the claim ABANDONED, since no workflow could be reached yet): stop the new run.
            log.info("execution.cancelled_while_starting", execution_id=str(execution.id))
            try:
                await self.launcher.cancel(execution)
            except Exception as exc:  # the reconciler ends it if this did not
                log.warning("execution.cancel_after_start_failed", error=str(exc))
            return
        log.info("execution.admitted", execution_id=str(execution.id), tenant=launch.tenant_name)

    async def release(self, execution: Execution) -> None:
        """Give the claimed execution's slot back: it waits in the queue again."""
        await self.repo.set_run_id(execution, None, claimed=CLAIMED)
        await self.session.commit()

    async def admit(self, tenant_id: uuid.UUID) -> list[Execution]:
        """Start the tenant's oldest queued executions that fit under its limit. One that
        Temporal does not take now stays queued (the sweep tries again)."""
        tier = await self.repo.tenant_tier(tenant_id)
        if tier is None:
            return []
        claimed: list[Claimed] = []
        await self.repo.lock_tenant_admission(tenant_id)  # until the commit below
        free = min(self.limit(tier) - await self.repo.started_count(tenant_id), ADMIT_AT_ONCE)
        if free > 0:
            for execution in await self.repo.queued(tenant_id, free):
                launch = await self.launch_of(execution)
                if await self._refused(execution, launch):
                    continue
                execution.run_id = CLAIMED
                claimed.append(Claimed(execution, launch))
        await self.recorder.commit()  # the lock is released here, before any start
        started: list[Execution] = []
        for item in claimed:
            try:
                await self.start(item.execution, item.launch)
            except BaseException as exc:
                # Temporal is not answering (or this task is being cancelled, as a recording
                # activity that outlives its timeout is): the rest go back to the queue.
                for rest in claimed[len(started) + 1 :]:
                    await self.release(rest.execution)
                if isinstance(exc, EngineUnavailable):
                    break
                raise
            started.append(item.execution)
        return started

    async def _refused(self, execution: Execution, launch: Launch) -> bool:
        """A queued execution whose plugins the tenant may no longer use (or this deployment
        no longer loads) ends FAILED with the reason instead of starting (True)."""
        try:
            await check_plugins(self.session, execution.tenant_id, launch.spec, self.settings)
        except (Forbidden, Conflict) as exc:
            await self.recorder.record(
                EventRecord(
                    str(execution.id),
                    run_key(launch.plan.number, "start-refused"),
                    EventType.FAILED,
                    Status.FAILED,
                    execution.progress,
                    message="not started: a plugin it uses is not available",
                    error=str(exc),
                )
            )
            log.info("execution.start_refused", execution_id=str(execution.id), error=str(exc))
            return True
        return False

    async def launch_of(self, execution: Execution, plan: RunPlan | None = None) -> Launch:
        """What starting the execution's current run needs: its tenant, its template version
        (parsed once per process) and, for a retry, the plan its audit trail gives."""
        tenant, template, version = await self.repo.launch_facts(execution)
        return Launch(
            tenant_name=tenant.name,
            tier=tenant.tier,
            template_name=template.name,
            version_id=version.id,
            version_number=version.version,
            spec=spec_of(version),
            plan=plan or await run_plan(self.session, execution.id),
        )


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
