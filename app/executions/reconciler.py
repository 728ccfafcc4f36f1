"""The reconciler: finishes executions whose workflow is gone or closed without its end recorded.

A workflow records its terminal event (COMPLETED, FAILED, CANCELLED) as its last act. One that
is terminated from the Temporal UI or CLI, times out, hits a history or payload limit, or
vanishes in a namespace reset never does: its row would stay RUNNING and hold one of the
tenant's concurrency slots forever. Every `reconcile_interval_seconds` the worker asks Temporal
about executions that should have a workflow (RUNNING, PAUSED, or PENDING with a run id) and
that have not changed for a grace period (one interval by default), and finishes those whose
workflow is not running: FAILED with the reason ("workflow terminated", "workflow timed out",
"workflow not found", ...), or CANCELLED when Temporal says the workflow was cancelled. The
event is published after commit and the tenant's next queued execution is admitted.

Bounded: candidates are read in pages of `PAGE_SIZE`, at most `MAX_PER_ROUND` per round, with
`DESCRIBE_CONCURRENCY` describes in flight; a cursor carries on where the last round stopped,
so long-running executions cannot hide the rest. A round stops when Temporal is unreachable.
Safe with several workers and against a tenant that moves on: each describe asks about the
run the row names (its run id), and the verdict is recorded under the execution's row lock
only if the row is still open AND unchanged since it was listed (same run id, last event seq
and updated_at), with an event key derived from its sequence (idempotent). A page's describes
take up to seconds; meanwhile the workflow may record its own end and the tenant retry it, so
the row runs a new run, and a verdict about the old one must not fail the new one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus

from app.db import SessionFactory, bound_statement_time
from app.executions.admission import CLAIMED, Admission
from app.executions.launcher import EngineUnavailable, Launcher, WorkflowGone
from app.executions.recorder import Publisher, Recorder
from app.executions.repository import ExecutionRepository, OpenExecution
from app.executions.workflow_io import EventRecord
from app.metrics import UPKEEP_FAILURES
from app.models import Execution, ExecutionEvent
from app.models.base import utcnow
from app.models.states import EventType, Status, holds_slot
from app.notifications.service import NotificationService
from app.settings import Settings
from app.sla.retention import purge_breaches

log = structlog.get_logger(__name__)
PAGE_SIZE = 100
MAX_PER_ROUND = 1000
DESCRIBE_CONCURRENCY = 16
PURGE_TIMEOUT_SECONDS = 10.0
ACTOR = "system:reconciler"


@dataclass(frozen=True)
class Verdict:
    """How to finish an execution whose workflow is not running, and why."""

    status: str  # FAILED or CANCELLED
    message: str


WORKFLOW_NOT_FOUND = Verdict(Status.FAILED, "workflow not found")
VERDICTS = {
    WorkflowExecutionStatus.TERMINATED: Verdict(Status.FAILED, "workflow terminated"),
    WorkflowExecutionStatus.TIMED_OUT: Verdict(Status.FAILED, "workflow timed out"),
    WorkflowExecutionStatus.FAILED: Verdict(
        Status.FAILED, "workflow failed without recording its end"
    ),
    WorkflowExecutionStatus.COMPLETED: Verdict(
        Status.FAILED, "workflow completed without recording its end"
    ),
    WorkflowExecutionStatus.CANCELED: Verdict(Status.CANCELLED, "workflow cancelled"),
    # RUNNING and CONTINUED_AS_NEW (the chain goes on in a newer run): nothing to do.
}


class TemporalUnreachable(Exception):
    """Temporal did not answer: this round stops (every other describe would wait as long)."""


def _unchanged(execution: Execution, seen: OpenExecution) -> bool:
    """Still the row the verdict is about: same run, no event or other change since listed."""
    now = (execution.run_id, execution.last_seq, execution.updated_at)
    return now == (seen.run_id, seen.last_seq, seen.updated_at)


async def finish_lost(
    recorder: Recorder,
    execution_id: uuid.UUID,
    verdict: Verdict,
    payload: dict[str, Any],
    *,
    seen: OpenExecution | None = None,
) -> tuple[ExecutionEvent, Execution] | None:
    """Record `verdict` as the terminal event of an execution whose workflow no longer runs,
    unless it ended (or was queued again) meanwhile, or, given `seen` (the row as listed when
    the verdict was asked for), it changed since; None then. The caller commits through the
    recorder (which publishes), then admits. The row lock serialises this with the recorder
    and other workers; the key makes a replay of the same decision a no-op."""
    execution = await recorder.repo.lock(execution_id)
    if execution is None or not holds_slot(execution.status, execution.run_id):
        return None
    if seen is not None and not _unchanged(execution, seen):
        log.info("reconcile.moved_on", execution_id=str(execution_id), verdict=verdict.message)
        return None
    return await recorder.record(
        EventRecord(
            str(execution.id),
            f"lost:{execution.last_seq}",
            EventType(verdict.status),
            verdict.status,
            execution.progress,
            message=verdict.message,
            payload=payload,
            error=verdict.message if verdict.status == Status.FAILED else None,
        )
    )


class Reconciler:
    """One per worker process; `run_round` is called every `reconcile_interval_seconds`."""

    def __init__(
        self,
        sessions: SessionFactory,
        temporal: Client,
        publisher: Publisher,
        settings: Settings,
        *,
        grace_seconds: float | None = None,
        purge_timeout_seconds: float = PURGE_TIMEOUT_SECONDS,
    ) -> None:
        self.sessions, self.temporal = sessions, temporal
        self.launcher = Launcher(temporal, settings)
        self.publisher, self.settings = publisher, settings
        # A row changed within the grace period is left alone: its workflow is probably
        # just starting or recording, and a lost one waits at most one more round.
        grace = settings.reconcile_interval_seconds if grace_seconds is None else grace_seconds
        self.grace = timedelta(seconds=grace)
        self._after: tuple[datetime, uuid.UUID] | None = None
        self._slots = asyncio.Semaphore(DESCRIBE_CONCURRENCY)
        self.purge_timeout = purge_timeout_seconds

    async def run_round(self) -> list[uuid.UUID]:
        """Check up to MAX_PER_ROUND quiet open executions; returns the ids it finished.
        Also deletes a batch of notifications and one of SLA breaches past their retention
        (never in its way)."""
        await self.purge_notifications()
        await self.purge_sla_breaches()
        quiet_since = utcnow() - self.grace
        finished: list[uuid.UUID] = []
        checked = 0
        while checked < MAX_PER_ROUND:
            limit = min(PAGE_SIZE, MAX_PER_ROUND - checked)
            async with self.sessions() as session:
                rows = await ExecutionRepository(session).open_quiet_since(
                    quiet_since, after=self._after, limit=limit
                )
            checked += len(rows)
            try:
                async with asyncio.TaskGroup() as group:  # the first unreachable ends them all
                    probes = [group.create_task(self.verdict(row)) for row in rows]
            except ExceptionGroup as failed:
                if not all(isinstance(e, TemporalUnreachable) for e in failed.exceptions):
                    raise
                log.warning("reconcile.temporal_unreachable", error=str(failed.exceptions[0]))
                break
            # A short page is the end: the next round starts from the oldest again.
            self._after = (rows[-1].created_at, rows[-1].id) if len(rows) == limit else None
            for row, probe in zip(rows, probes, strict=True):
                verdict = probe.result()
                if verdict is not None and await self.finish(row, verdict):
                    finished.append(row.id)
            if self._after is None:
                break
        return finished

    async def purge_notifications(self) -> int:
        """Delete up to PURGE_BATCH notifications older than NOTIFICATION_RETENTION_DAYS."""
        days = self.settings.notification_retention_days
        return await self._purge("notifications", lambda s: NotificationService(s).purge(days))

    async def purge_sla_breaches(self) -> int:
        """Delete up to a batch of SLA breaches older than SLA_BREACH_RETENTION_DAYS."""
        days = self.settings.sla_breach_retention_days
        return await self._purge("sla_breaches", lambda s: purge_breaches(s, days))

    async def _purge(self, what: str, delete: Callable[[AsyncSession], Awaitable[int]]) -> int:
        """Run one purge batch in its own transaction; returns how many rows went.

        Never raises and never waits long: a DELETE slower than the purge timeout (rows locked
        by another session, a slow disk) is logged and counted (wfs_upkeep_failures_total, job
        `<what>.purge`) and the next round tries again; lost executions must still be finished
        meanwhile."""
        try:
            async with self.sessions() as session:
                await bound_statement_time(session, self.purge_timeout)
                deleted = await delete(session)
                await session.commit()
        except (SQLAlchemyError, OSError) as exc:
            UPKEEP_FAILURES.labels(job=f"{what}.purge").inc()
            log.warning(f"{what}.purge_failed", error=str(exc))
            return 0
        if deleted:
            log.info(f"{what}.purged", count=deleted)
        return deleted

    async def verdict(self, row: OpenExecution) -> Verdict | None:
        """How to finish the listed row, or None while its run is running (or Temporal gave
        an answer that decides nothing). Describes ask about the run the row names, not
        whatever run has the workflow id now (a retry starts another one); a claim or an
        unknown run asks about the latest. Raises TemporalUnreachable."""
        async with self._slots:
            try:
                status = await self.launcher.status(row.workflow_id, row.run_id)
            except WorkflowGone:
                return WORKFLOW_NOT_FOUND
            except EngineUnavailable as exc:
                if exc.unreachable:
                    raise TemporalUnreachable(str(exc)) from exc
                log.warning("reconcile.describe_failed", execution_id=str(row.id), error=str(exc))
                return None
        return VERDICTS.get(status) if status is not None else None

    async def finish(self, row: OpenExecution, verdict: Verdict) -> bool:
        """Record the verdict about the listed row, if the row is still as listed; then
        publish and admit the tenant's next execution. False when nothing was recorded.
        A claimed execution whose workflow never appeared (its starter died between the
        claim and the start) is not lost but unstarted: it is queued again instead."""
        payload = {"actor": ACTOR, "reason": verdict.message}
        async with self.sessions() as session:
            recorder = Recorder(session, self.publisher)
            if row.run_id == CLAIMED:
                # A claim has no run of its own to judge (the latest run under its workflow id
                # may be the one before a retry): it is queued again.
                done, tenant_id = None, await self._requeue(recorder, row)
            else:
                done = await finish_lost(recorder, row.id, verdict, payload, seen=row)
                tenant_id = done[1].tenant_id if done is not None else None
            await recorder.commit()
        if tenant_id is None:
            return False
        if done is not None:
            log.warning(
                "execution.reconciled",
                execution_id=str(row.id),
                tenant_id=str(tenant_id),
                status=verdict.status,
                reason=verdict.message,
            )
        try:  # a slot is free, or one more waits: start the tenant's next queued execution
            async with self.sessions() as session:
                admission = Admission(session, self.temporal, self.publisher, self.settings)
                await admission.admit(tenant_id)
        except Exception as exc:  # the admission sweep retries it
            log.warning("reconcile.admit_failed", tenant_id=str(tenant_id), error=str(exc))
        return done is not None

    async def _requeue(self, recorder: Recorder, row: OpenExecution) -> uuid.UUID | None:
        """Release the claim of a listed execution still as listed; its tenant, or None."""
        execution = await recorder.repo.lock(row.id)
        if execution is None or not _unchanged(execution, row):
            return None
        if not await recorder.repo.set_run_id(execution, None, claimed=CLAIMED):
            return None
        log.warning("reconcile.requeued_claim", execution_id=str(row.id))
        return execution.tenant_id
