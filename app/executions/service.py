"""Execution rules: start (validate, persist, then start the workflow), record transitions, read.

The start is the one place a service commits: the row must be durable before the workflow
exists, so that every event the worker records has a row to attach to; the workflow start and
the bus publish happen only after that commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError

from app.errors import Conflict, Forbidden, NotFound, Unavailable, ValidationFailed
from app.executions.events import (
    TERMINAL_EVENTS,
    TERMINAL_STATUSES,
    event_message,
    execution_channel,
    refused_tasks,
    tenant_channel,
)
from app.executions.repository import ExecutionRepository
from app.executions.workflow_io import (
    EVENT_SIGNAL,
    EventRecord,
    ExternalEvent,
    RunInput,
    RunLimits,
)
from app.jsonschemas import limit_problems, storable
from app.metrics import (
    ENHANCEMENT_POINTS,
    EVENT_PUBLISH_FAILURES,
    EXECUTION_DURATION,
    EXECUTION_EVENTS,
    EXECUTION_START_FAILURES,
)
from app.models import STATUSES, Execution, ExecutionEvent
from app.models.base import utcnow
from app.pagination import Page, check_first, decode_cursor, encode_cursor
from app.settings import Settings
from app.templates.schemas import TemplateSpec
from app.templates.service import TemplateService
from app.temporal import TEMPLATE_KEY, TENANT_KEY, TIER_KEY
from app.tenants.service import Principal

log = structlog.get_logger(__name__)


class Publisher(Protocol):
    async def publish(self, channel: str, data: dict[str, Any]) -> bool: ...


@dataclass
class StartRequest:
    template_id: uuid.UUID | None
    template_name: str | None
    params: Any
    idempotency_key: str | None
    params_version: int | None = None  # the template version params were written for


def build_run_input(
    execution: Execution,
    template_name: str,
    version_number: int,
    spec: TemplateSpec,
    settings: Settings,
    *,
    run_number: int = 1,
    completed: dict[str, Any] | None = None,
) -> RunInput:
    return RunInput(
        execution_id=str(execution.id),
        tenant_id=str(execution.tenant_id),
        template_name=template_name,
        template_version=version_number,
        params=execution.params,
        steps=spec.plan(
            default_timeout=settings.step_default_timeout_seconds,
            default_attempts=settings.step_default_max_attempts,
            ai_task_queue=settings.ai_task_queue,
        ),
        output=spec.output,
        max_wait_seconds=settings.max_wait_seconds,
        for_each_batch_size=settings.for_each_batch_size,
        ai_task_queue=settings.ai_task_queue,
        run_number=run_number,
        completed=completed or {},
        limits=RunLimits.of(settings),
    )


def search_attributes(tenant_name: str, template_name: str, tier: str) -> TypedSearchAttributes:
    """What the Temporal UI and CLI filter executions by."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(TENANT_KEY, tenant_name),
            SearchAttributePair(TEMPLATE_KEY, template_name),
            SearchAttributePair(TIER_KEY, tier),
        ]
    )


class ExecutionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = ExecutionRepository(session)

    async def get(self, tenant_id: uuid.UUID, execution_id: uuid.UUID) -> Execution:
        execution = await self.repo.get_for_tenant(tenant_id, execution_id)
        if execution is None:
            raise NotFound("execution not found")
        return execution

    async def list_page(
        self, tenant_id: uuid.UUID, *, status: str | None, first: int | None, after: str | None
    ) -> Page[Execution]:
        if status is not None and status not in STATUSES:
            raise ValidationFailed(f"unknown status {status!r}")
        limit = check_first(first)
        rows = await self.repo.list_for_tenant(
            tenant_id,
            status=status,
            limit=limit + 1,
            after=decode_cursor(after, "datetime", "uuid"),
        )
        items = rows[:limit]
        return Page(
            items=items,
            cursors=[encode_cursor([e.created_at.isoformat(), str(e.id)]) for e in items],
            has_next=len(rows) > limit,
        )

    async def events_after(
        self, execution_id: uuid.UUID, after_seq: int, limit: int = 500
    ) -> list[ExecutionEvent]:
        return await self.repo.events_after(execution_id, after_seq, limit)

    async def start(
        self,
        principal: Principal,
        request: StartRequest,
        *,
        temporal: Client,
        publisher: Publisher,
        settings: Settings,
    ) -> Execution:
        if principal.role == "viewer":
            raise Forbidden("viewers cannot start executions")
        key = request.idempotency_key
        if key is not None and not 1 <= len(key) <= 200:
            raise ValidationFailed("idempotencyKey must be 1-200 characters")
        if key is not None and (
            existing := await self.repo.by_idempotency_key(principal.tenant_id, key)
        ):
            return self._same_request(existing, request)

        templates = TemplateService(self.session)
        template = await templates.resolve(
            principal.tenant_id, template_id=request.template_id, name=request.template_name
        )
        # Another publisher's template runs only at the version the tenant's admin accepted.
        version, spec = await templates.version_to_run(
            principal.tenant_id, template, request.template_name or template.name
        )
        params = {} if request.params is None else request.params
        if not isinstance(params, dict):
            raise ValidationFailed("params must be a JSON object")
        # Capped and validated off the event loop within the settings' limits.
        params = await templates.prepare_params(
            template,
            version,
            params,
            request.params_version,
            settings,
            tenant_id=principal.tenant_id,
        )

        execution_id = uuid.uuid4()
        execution = Execution(
            id=execution_id,
            tenant_id=principal.tenant_id,
            template_id=template.id,
            template_version_id=version.id,
            params=params,
            status="PENDING",
            progress=0.0,
            idempotency_key=key,
            workflow_id=f"exec-{execution_id}",
        )
        try:
            await self.repo.add(execution)
            created, _ = await self.record(
                EventRecord(
                    str(execution_id),
                    "created",
                    "CREATED",
                    "PENDING",
                    0.0,
                    message=f"{template.name} v{version.version}",
                )
            )
            await self.session.commit()
        except IntegrityError:
            # Lost a race with the same idempotency key: the winner's execution is the answer.
            await self.session.rollback()
            existing = await self.repo.by_idempotency_key(principal.tenant_id, key or "")
            if existing is None:
                raise
            return self._same_request(existing, request)
        await self.publish_event(publisher, created, execution)

        # Imported here: admission builds on this module (launching uses build_run_input).
        from app.executions.admission import Admission, launch, tenant_lock

        try:
            async with tenant_lock(self.session, principal.tenant_id):
                admission = Admission(self.session, temporal, publisher, settings)
                if await admission.queue_if_full(execution, principal.tier):
                    log.info("execution.queued", execution_id=str(execution_id))
                    return execution
                await launch(
                    temporal,
                    execution,
                    tenant_name=principal.tenant_name,
                    tier=principal.tier,
                    template_name=template.name,
                    version_number=version.version,
                    spec=spec,
                    settings=settings,
                )
                await self.session.commit()
        except Exception as exc:  # Temporal unreachable or refused: mark the row, tell the caller.
            await self.session.rollback()
            EXECUTION_START_FAILURES.inc()
            log.warning("execution.start_failed", execution_id=str(execution_id), error=str(exc))
            failed, _ = await self.record(
                EventRecord(
                    str(execution_id),
                    "start-failed",
                    "FAILED",
                    "FAILED",
                    0.0,
                    message="could not start the workflow",
                    # The tenant reads this; Temporal's text (hosts, ports) goes to the log only.
                    error="could not start the workflow: the workflow engine is unavailable",
                )
            )
            await self.session.commit()
            await self.publish_event(publisher, failed, execution)
            raise Unavailable(
                "could not start the workflow; the execution is marked FAILED"
            ) from exc
        log.info(
            "execution.started",
            execution_id=str(execution_id),
            tenant_id=str(principal.tenant_id),
            template=template.name,
            version=version.version,
        )
        return execution

    async def send_event(
        self,
        principal: Principal,
        execution_id: uuid.UUID,
        name: str,
        payload: Any,
        *,
        temporal: Client,
        settings: Settings,
    ) -> Execution:
        """Deliver a named event to a running execution (a `wait.event` step consumes it).

        Events sent before the step starts waiting are kept by the workflow until it does.
        A payload is bounded like params (it lands in the workflow's history and in a step's
        output).
        """
        if principal.role == "viewer":
            raise Forbidden("viewers cannot send events to executions")
        if not 1 <= len(name) <= 100:
            raise ValidationFailed("event name must be 1-100 characters")
        problems = limit_problems(
            {"name": name, "payload": payload},
            what="the event",
            max_bytes=settings.max_params_bytes,
            bytes_setting="max_params_bytes",
            max_depth=settings.max_json_depth,
        )
        if problems:
            raise ValidationFailed(problems[0]["message"], details=problems)
        execution = await self.get(principal.tenant_id, execution_id)
        if execution.status in TERMINAL_STATUSES:
            raise Conflict(f"execution is {execution.status}; it takes no more events")
        try:
            await temporal.get_workflow_handle(execution.workflow_id).signal(
                EVENT_SIGNAL, ExternalEvent(name=name, payload=payload)
            )
        except RPCError as exc:
            log.warning("execution.event_failed", execution_id=str(execution_id), error=exc.message)
            raise Unavailable("could not deliver the event") from exc
        log.info("execution.event_sent", execution_id=str(execution_id), event_name=name)
        return execution

    @staticmethod
    def _same_request(existing: Execution, request: StartRequest) -> Execution:
        if request.template_id is not None and existing.template_id != request.template_id:
            raise Conflict("idempotencyKey was already used for another template")
        return existing

    async def record(self, rec: EventRecord) -> tuple[ExecutionEvent, Execution]:
        """Append a transition and update the execution row; idempotent by (execution, key).

        The row lock serialises sequence numbers per execution. The caller commits.
        """
        execution = await self.repo.lock(uuid.UUID(rec.execution_id))
        if execution is None:
            raise NotFound(f"execution {rec.execution_id} not found")
        rec = _storable(rec)
        existing = await self.repo.event_by_key(execution.id, rec.key)
        if existing is not None:
            return existing, execution
        now = utcnow()
        execution.last_seq += 1
        execution.status = rec.status
        # Events recorded concurrently (fan-out slices) may commit out of order: progress only
        # grows within a run (a retried run starts again from its kept steps).
        execution.progress = (
            rec.progress if rec.type == "RETRIED" else max(execution.progress, rec.progress)
        )
        if rec.type == "STEP_STARTED":
            execution.current_step = rec.step_id
        if rec.type == "STARTED" and execution.started_at is None:
            execution.started_at = now
        if rec.type == "RETRIED":
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
        if rec.type == "STEP_ENHANCED":
            # Counted once per recorded point (not on the idempotent replay above). A step that
            # refused its AI output adds decision REJECTED (its points' AI samples stay), task
            # being the refused tasks comma-joined: bounded as well.
            point = rec.payload.get("enhancement") or {}
            refused = refused_tasks(point) is not None
            ENHANCEMENT_POINTS.labels(
                point.get("task") or "?",
                "REJECTED" if refused else point.get("decision") or "?",
                point.get("reason") or "?",
            ).inc()
        event = await self.repo.add_event(
            ExecutionEvent(
                execution_id=execution.id,
                seq=execution.last_seq,
                key=rec.key,
                type=rec.type,
                status=rec.status,
                progress=rec.progress,
                step_id=rec.step_id,
                message=rec.message,
                # The running AI cost rides on every event, so a live view shows it grow.
                payload={**rec.payload, "cost_usd": str(await self.repo.ai_cost(execution.id))},
                at=now,
            )
        )
        return event, execution

    @staticmethod
    async def publish_event(
        publisher: Publisher, event: ExecutionEvent, execution: Execution
    ) -> None:
        message = event_message(event, execution)
        delivered = await publisher.publish(execution_channel(execution.id), message)
        delivered &= await publisher.publish(tenant_channel(execution.tenant_id), message)
        if not delivered:
            EVENT_PUBLISH_FAILURES.inc()


# Deeper than any value a step may produce (MAX_JSON_DEPTH): what is recorded is kept whole.
_RECORD_DEPTH = 64


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
