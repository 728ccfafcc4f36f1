"""Execution rules: start (validate, persist, admit, start the workflow), send events, read.

The start is the one place a service commits: the row must be durable before the workflow
exists, so that every event the worker records has a row to attach to. One transaction
inserts the row, records CREATED and claims a slot (or queues it); after its commit the
Recorder publishes, and admission starts the workflow with no lock held
(app/executions/admission.py describes the path every run's start takes).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from app.errors import Conflict, Forbidden, NotFound, Unavailable, ValidationFailed
from app.executions.admission import Admission, check_plugins
from app.executions.launcher import EngineUnavailable, Launch, Launcher, WorkflowGone
from app.executions.recorder import Publisher, Recorder, TransitionRefused
from app.executions.repository import ExecutionCriteria, ExecutionRepository
from app.executions.workflow_io import EVENT_SIGNAL, EventRecord, ExternalEvent
from app.jsonschemas import limit_problems
from app.log_context import bind
from app.metrics import EXECUTION_START_FAILURES
from app.models import Execution, ExecutionEvent
from app.models.states import STATUSES, TERMINAL, EventType, Status
from app.pagination import Window, WindowPage, window_page
from app.settings import Settings
from app.templates.service import TemplateService
from app.tenants.service import Principal

log = structlog.get_logger(__name__)


@dataclass
class StartRequest:
    template_id: uuid.UUID | None
    template_name: str | None
    params: Any
    idempotency_key: str | None
    params_version: int | None = None  # the template version params were written for


# Counting every match reads them all: 70-140 ms for a tenant's million executions here,
# 200+ ms when the rows themselves must be read (docs/performance.md). Counts stop past this
# many (a few ms), and say so: "10,000+" is what a pager shows anyway.
COUNT_CAP = 10_000
MAX_TEMPLATE_NAME = 200


@dataclass
class ExecutionFilter:
    """A filter as the tenant sent it (checked by ExecutionService.criteria); None matches
    any."""

    statuses: list[str] | None = None
    template_name: str | None = None
    template_id: uuid.UUID | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    params_contains: Any = None


def _checked(request: ExecutionFilter, settings: Settings) -> ExecutionCriteria:
    """The filter checked, its template name aside: known statuses, a bounded template name,
    an ordered time range (a time without an offset is UTC) and paramsContains a JSON object
    within the params limits (it is sent to PostgreSQL's `@>` as it is)."""
    statuses = None
    if request.statuses:  # null or [] match any status
        unknown = sorted(set(request.statuses) - set(STATUSES))
        if unknown:
            raise ValidationFailed(f"unknown status {unknown[0]!r}")
        statuses = tuple(s for s in STATUSES if s in request.statuses)
    name = request.template_name
    if name is not None and not 1 <= len(name) <= MAX_TEMPLATE_NAME:
        raise ValidationFailed(f"templateName must be 1-{MAX_TEMPLATE_NAME} characters")
    after, before = _utc(request.started_after), _utc(request.started_before)
    if after is not None and before is not None and after > before:
        raise ValidationFailed("startedAfter must not be later than startedBefore")
    contains = request.params_contains
    if contains is not None:
        if not isinstance(contains, dict):
            raise ValidationFailed("paramsContains must be a JSON object")
        problems = limit_problems(
            contains,
            what="paramsContains",
            max_bytes=settings.max_params_bytes,
            bytes_setting="max_params_bytes",
            max_depth=settings.max_json_depth,
        )
        if problems:
            raise ValidationFailed(problems[0]["message"], details=problems)
    ids = (request.template_id,) if request.template_id is not None else None
    return ExecutionCriteria(statuses, ids, after, before, contains)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _cursor_key(execution: Execution) -> list[Any]:
    return [execution.created_at.isoformat(), str(execution.id)]


class ExecutionService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = ExecutionRepository(session)

    async def get(self, tenant_id: uuid.UUID, execution_id: uuid.UUID) -> Execution:
        execution = await self.repo.get_for_tenant(tenant_id, execution_id)
        if execution is None:
            raise NotFound("execution not found")
        return execution

    async def criteria(
        self, tenant_id: uuid.UUID, request: ExecutionFilter, settings: Settings
    ) -> ExecutionCriteria:
        """The filter checked (VALIDATION_FAILED otherwise), its template name resolved to ids
        (with a templateId too: the ids both name)."""
        criteria = _checked(request, settings)
        if request.template_name is None:
            return criteria
        named = await self.repo.template_ids_named(tenant_id, request.template_name)
        if criteria.template_ids is not None:
            named = tuple(i for i in named if i in criteria.template_ids)
        return replace(criteria, template_ids=named)

    async def list_page(
        self, tenant_id: uuid.UUID, criteria: ExecutionCriteria, win: Window
    ) -> WindowPage[Execution]:
        """One page of the tenant's matching executions, newest first (created_at, id)."""
        rows = await self.repo.list_for_tenant(
            tenant_id, criteria, limit=win.size + 1, cursor=win.cursor, forward=win.forward
        )
        beyond = win.cursor is not None and await self.repo.any_beyond(
            tenant_id, criteria, win.cursor, newer=win.forward
        )
        return window_page(rows, win, _cursor_key, beyond)

    async def count(self, tenant_id: uuid.UUID, criteria: ExecutionCriteria) -> int:
        """How many executions match, up to COUNT_CAP; COUNT_CAP + 1 means "more than that"."""
        return await self.repo.count_for_tenant(tenant_id, criteria, cap=COUNT_CAP)

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
        await check_plugins(self.session, principal.tenant_id, spec, settings)
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
        bind(execution_id=execution_id)  # the request's later log lines are about it
        execution = Execution(
            id=execution_id,
            tenant_id=principal.tenant_id,
            template_id=template.id,
            template_version_id=version.id,
            params=params,
            status=Status.PENDING,
            progress=0.0,
            idempotency_key=key,
            workflow_id=f"exec-{execution_id}",
            tier=principal.tier,
            # No AI usage yet (the INSERT writes NULL either way). Set, not left unloaded, so
            # the answer reads them from the object without a load after the session closed.
            ai_cost_usd=None,
            ai_answered_calls=None,
        )
        recorder = Recorder(self.session, publisher)
        admission = Admission(self.session, temporal, publisher, settings, recorder)
        try:
            await self.repo.add(execution)
            await recorder.record(
                EventRecord(
                    str(execution_id),
                    "created",
                    EventType.CREATED,
                    Status.PENDING,
                    0.0,
                    message=f"{template.name} v{version.version}",
                ),
                new=execution,
            )
            claimed = await admission.claim(execution, principal.tier)
            await recorder.commit()
        except IntegrityError:
            # Lost a race with the same idempotency key: the winner's execution is the answer.
            await recorder.rollback()
            existing = await self.repo.by_idempotency_key(principal.tenant_id, key or "")
            if existing is None:
                raise
            return self._same_request(existing, request)
        if not claimed:
            log.info("execution.queued", execution_id=str(execution_id))
            return execution
        launch = Launch(
            tenant_name=principal.tenant_name,
            tier=principal.tier,
            template_name=template.name,
            version_id=version.id,
            version_number=version.version,
            spec=spec,
        )
        try:
            # Not queued again on failure: the caller is told now, and the execution ends.
            await admission.start(execution, launch, requeue=False)
        except EngineUnavailable as exc:
            EXECUTION_START_FAILURES.inc()
            try:
                await recorder.record(
                    EventRecord(
                        str(execution_id),
                        "start-failed",
                        EventType.FAILED,
                        Status.FAILED,
                        0.0,
                        message="could not start the workflow",
                        # The tenant reads this; Temporal's text (hosts, ports) is in the log.
                        error="could not start the workflow: the workflow engine is unavailable",
                    )
                )
                await recorder.commit()
            except TransitionRefused:  # cancelled meanwhile: it has ended already
                await recorder.rollback()
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
        if execution.status in TERMINAL:
            raise Conflict(f"execution is {execution.status}; it takes no more events")
        launcher = Launcher(temporal, settings)
        try:
            await launcher.signal(
                execution, EVENT_SIGNAL, ExternalEvent(name=name, payload=payload)
            )
        except (WorkflowGone, EngineUnavailable) as exc:
            raise Unavailable("could not deliver the event") from exc
        log.info("execution.event_sent", execution_id=str(execution_id), event_name=name)
        return execution

    @staticmethod
    def _same_request(existing: Execution, request: StartRequest) -> Execution:
        if request.template_id is not None and existing.template_id != request.template_id:
            raise Conflict("idempotencyKey was already used for another template")
        return existing
