"""The recorder: the one writer of an execution's status and audit trail, and its publisher.

Every transition (from the API, admission, control, the reconciler or a workflow's
`execution.record_event` activity) goes through `Recorder.record`, which checks it against
the state machine (app/models/states.py), numbers it, updates the row and appends the
event; `Recorder.commit` commits the caller's transaction and only then publishes what was
recorded, in order, so a subscriber never sees an event the database could still lose.
A terminal event (COMPLETED, FAILED, CANCELLED) also appends to the tenant's notification log
(app/notifications) in the same transaction, just before the commit (the log's per-tenant
counter lock is then held for the commit only), and wakes its live readers after it; so does
an SLA_BREACH when the run took longer than its duration target (app/sla, one more query per
ended run: the targets in force), judged first (breach row, then the notifications: the SLA
sweep's lock order) and in a savepoint, so an SLA failure never fails the terminal event.

Per event: one locking read of the row, one INSERT of the event (idempotent by key through
ON CONFLICT, the running AI cost read inside it), one UPDATE of the row at flush. A row this
transaction just inserted (a start) is not locked again.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound
from app.events import channels
from app.executions.events import event_message, refused_tasks
from app.executions.repository import ExecutionRepository
from app.executions.workflow_io import EventRecord
from app.ids import global_id
from app.jsonschemas import storable
from app.metrics import (
    ENHANCEMENT_POINTS,
    EVENT_PUBLISH_FAILURES,
    EXECUTION_DURATION,
    EXECUTION_EVENTS,
    SLA_FAILURES,
    TRANSITIONS_REFUSED,
)
from app.models import Execution, ExecutionEvent
from app.models.base import utcnow
from app.models.states import TERMINAL_EVENTS, EventType, Status, refusal
from app.notifications.service import NotificationService, wake
from app.sla import service as sla

log = structlog.get_logger(__name__)
# A FAILED execution's error as its notification carries it (the execution has it whole).
_NOTIFIED_ERROR_CHARS = 1000
# Deeper than any value a step may produce (MAX_JSON_DEPTH): what is recorded is kept whole.
_RECORD_DEPTH = 64


class Publisher(Protocol):
    async def publish(self, channel: str, data: dict[str, Any]) -> bool: ...


class TransitionRefused(Conflict):
    """The event may not be recorded in the execution's current status (states.TRANSITIONS)."""


class Recorder:
    def __init__(self, session: AsyncSession, publisher: Publisher | None = None) -> None:
        self.session, self.publisher = session, publisher
        self.repo = ExecutionRepository(session)
        self._unpublished: list[tuple[ExecutionEvent, Execution]] = []

    async def record(
        self, rec: EventRecord, *, new: Execution | None = None
    ) -> tuple[ExecutionEvent, Execution]:
        """Append a transition and update the execution row; idempotent by (execution, key):
        a replay returns the event already recorded. `new`: the row, when this transaction
        inserted it (nobody else can see it, so there is nothing to lock). Raises NotFound,
        and TransitionRefused when the state machine forbids it. The caller commits (through
        `commit`, which publishes)."""
        execution = new or await self.repo.lock(uuid.UUID(rec.execution_id))
        if execution is None:
            raise NotFound(f"execution {rec.execution_id} not found")
        rec = _storable(rec)
        why = refusal(execution.status, rec.type, rec.status)
        if why is not None:
            existing = await self.repo.event_by_key(execution.id, rec.key)
            if existing is not None:  # a replay of an event recorded before the status moved
                return existing, execution
            TRANSITIONS_REFUSED.labels(rec.type, execution.status).inc()
            raise TransitionRefused(why)
        now = utcnow()
        event = await self.repo.add_event_once(
            execution.id,
            seq=execution.last_seq + 1,
            key=rec.key,
            type=rec.type,
            status=rec.status,
            progress=rec.progress,
            step_id=rec.step_id,
            message=rec.message,
            payload=rec.payload,
            at=now,
            with_ai_cost=new is None,  # a row inserted now has no AI usage yet
        )
        if event is None:  # recorded before (a retried activity): nothing changes
            existing = await self.repo.event_by_key(execution.id, rec.key)
            assert existing is not None
            return existing, execution
        _apply(execution, rec, now)
        self._unpublished.append((event, execution))
        return event, execution

    async def commit(self) -> None:
        """Commit the caller's transaction (with the notifications of the executions it
        ended), then publish what it recorded, in order."""
        ended = [x for e, x in self._unpublished if _ends(e)]
        # The SLA's breach rows before any notification: the SLA sweep takes the same order
        # (execution row, breach row, the tenant's notification counter), so the two never
        # deadlock (PostgreSQL would abort one of them: here, the terminal event).
        breaches = [b for x in ended if (b := await _duration_breach(self.session, x))]
        notified = [await _notify(self.session, e, x) for e, x in self._unpublished if _ends(e)]
        await self.session.commit()
        recorded, self._unpublished = self._unpublished, []
        if self.publisher is not None:
            for event, execution in recorded:
                await publish(self.publisher, event, execution)
            for tenant_id, seq in notified:
                if not await wake(self.publisher.publish, tenant_id, seq):
                    EVENT_PUBLISH_FAILURES.inc()
        await sla.after_commit(self.publisher.publish if self.publisher else None, breaches)

    async def rollback(self) -> None:
        await self.session.rollback()
        self._unpublished = []


async def _duration_breach(session: AsyncSession, execution: Execution) -> sla.Notified | None:
    """The run judged against its duration target in a savepoint: an SLA problem (a bad
    stored target, a failed insert) is logged and counted (wfs_sla_failures_total{where=
    "recorder"}) and rolled back alone; the terminal event is recorded whatever happens here."""
    try:
        async with session.begin_nested():
            return await sla.duration_breach(session, execution)
    except Exception:  # whatever it is, the run still ends
        SLA_FAILURES.labels("recorder").inc()
        log.exception("sla.recorder_failed", execution_id=str(execution.id))
        return None


def _ends(event: ExecutionEvent) -> bool:
    return event.type in TERMINAL_EVENTS


async def _notify(
    session: AsyncSession, event: ExecutionEvent, execution: Execution
) -> tuple[uuid.UUID, int]:
    """Append the tenant's EXECUTION_<status> notification; (tenant, seq) to wake after commit."""
    data: dict[str, Any] = {
        "status": event.status,
        "templateId": global_id("Template", execution.template_id),
    }
    if event.status == Status.FAILED:
        data["error"] = (execution.error or "")[:_NOTIFIED_ERROR_CHARS]
    seq = await NotificationService(session).add(
        execution.tenant_id,
        f"EXECUTION_{event.type}",
        data,
        execution_id=execution.id,
        at=event.at,
    )
    return execution.tenant_id, seq


def _apply(execution: Execution, rec: EventRecord, now: Any) -> None:
    """The row after `rec`: status, progress, current step, timestamps, outcome; metrics."""
    execution.last_seq += 1
    execution.status = rec.status
    # Events recorded concurrently (fan-out slices) may commit out of order: progress only
    # grows within a run (a retried run starts again from its kept steps).
    execution.progress = (
        rec.progress if rec.type == EventType.RETRIED else max(execution.progress, rec.progress)
    )
    if rec.type == EventType.STEP_STARTED:
        execution.current_step = rec.step_id
    if rec.type == EventType.STARTED and execution.started_at is None:
        execution.started_at = now
    if rec.type == EventType.RETRIED:
        execution.finished_at = execution.result = execution.error = None
    if rec.type in TERMINAL_EVENTS:
        execution.finished_at = now
        EXECUTION_DURATION.labels(rec.status).observe(
            (now - (execution.started_at or execution.created_at)).total_seconds()
        )
        execution.current_step = None
        execution.result = rec.result
        execution.error = rec.error
    EXECUTION_EVENTS.labels(rec.type).inc()
    if rec.type == EventType.STEP_ENHANCED:
        # Counted once per recorded point (not on an idempotent replay). A step that refused
        # its AI output adds decision REJECTED (its points' AI samples stay), task being the
        # refused tasks comma-joined: bounded as well.
        point = rec.payload.get("enhancement") or {}
        refused = refused_tasks(point) is not None
        ENHANCEMENT_POINTS.labels(
            point.get("task") or "?",
            "REJECTED" if refused else point.get("decision") or "?",
            point.get("reason") or "?",
        ).inc()


async def publish(publisher: Publisher, event: ExecutionEvent, execution: Execution) -> None:
    """Send a committed event to the execution's and the tenant's channels."""
    message = event_message(event, execution)
    delivered = await publisher.publish(channels.execution(execution.id), message)
    delivered &= await publisher.publish(
        channels.tenant(execution.tenant_id, channels.EXECUTIONS), message
    )
    if not delivered:
        EVENT_PUBLISH_FAILURES.inc()


def _storable(rec: EventRecord) -> EventRecord:
    """What happened is recorded whatever a tenant's data holds: PostgreSQL refuses NaN,
    Infinity and NUL characters, and a refused insert would be retried forever with the
    execution stuck RUNNING. Values are checked where they enter (params, step outputs,
    events); this is the net behind those checks."""
    return replace(
        rec,
        message=storable(rec.message, _RECORD_DEPTH),
        payload=storable(rec.payload, _RECORD_DEPTH),
        result=storable(rec.result, _RECORD_DEPTH),
        error=storable(rec.error, _RECORD_DEPTH),
    )
