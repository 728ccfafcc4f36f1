"""Activities: thin edges that call app services. Each call owns one session and commits;
events are published to the bus only after the commit."""

from __future__ import annotations

from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.db import SessionFactory
from app.errors import NotFound
from app.executions.service import ExecutionService, Publisher
from app.executions.workflow_io import RECORD_EVENT_ACTIVITY, EventRecord, StepCall
from app.steps import aggregate, transform
from app.steps.data import StepInputError

log = structlog.get_logger(__name__)


class TemplateActivities:
    def __init__(self, sessions: SessionFactory, publisher: Publisher) -> None:
        self.sessions = sessions
        self.publisher = publisher

    def all(self) -> list[Any]:
        return [self.record_event, self.data_transform, self.data_aggregate]

    @activity.defn(name=RECORD_EVENT_ACTIVITY)
    async def record_event(self, rec: EventRecord) -> int:
        """Append the transition (idempotent by key), commit, then publish; returns its seq."""
        async with self.sessions() as session:
            service = ExecutionService(session)
            try:
                event, execution = await service.record(rec)
            except NotFound as exc:
                raise ApplicationError(exc.message, non_retryable=True) from exc
            await session.commit()
        await ExecutionService.publish_event(self.publisher, event, execution)
        return event.seq

    @activity.defn(name="data.transform")
    async def data_transform(self, call: StepCall) -> Any:
        return _run_pure(transform, call)

    @activity.defn(name="data.aggregate")
    async def data_aggregate(self, call: StepCall) -> Any:
        return _run_pure(aggregate, call)


def _run_pure(fn: Any, call: StepCall) -> Any:
    try:
        return fn(call.input)
    except StepInputError as exc:
        # Bad input never gets better on retry: fail the step now with the reason.
        raise ApplicationError(str(exc), type="StepInputError", non_retryable=True) from exc
