"""Activities: thin edges that call app code. `execution.record_event` owns one session per
call and commits before it publishes. Every standard step activity with a `run` in
app.steps.STEP_ACTIVITIES is registered under its own name (`data.transform`, `email.send`,
...), so templates name activities and plugins add entries to the registry."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from app.analytics.service import UsageService
from app.db import SessionFactory
from app.errors import NotFound
from app.executions.admission import Admission
from app.executions.recorder import Publisher, Recorder, TransitionRefused
from app.executions.workflow_io import (
    INPUT_ERROR,
    INPUT_REFUSED,
    RECORD_EVENT_ACTIVITY,
    EventRecord,
    StepCall,
)
from app.jsonschemas import compact_size, shape_problem
from app.models.states import TERMINAL_EVENTS
from app.settings import Settings
from app.steps import STEP_ACTIVITIES, StepActivity, StepContext, StepInputError
from app.steps.base import StepInputRefused, StepTransientError
from workers.heartbeat import Beats, beat_every, heartbeating

log = structlog.get_logger(__name__)
STEP_OUTPUT_INVALID = "StepOutputInvalid"


class TemplateActivities:
    def __init__(self, sessions: SessionFactory, publisher: Publisher, settings: Settings) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.settings = settings

    def all(self) -> list[Callable[..., Awaitable[Any]]]:
        steps = [self._step(e) for e in STEP_ACTIVITIES.values() if e.run is not None]
        return [self.record_event, *steps]

    @activity.defn(name=RECORD_EVENT_ACTIVITY)
    async def record_event(self, rec: EventRecord) -> int:
        """Append the transition (idempotent by key), commit, then publish; returns its seq.
        A transition the execution's status no longer allows (a late event of a run that was
        ended from outside, e.g. by the reconciler) is dropped, not retried: 0."""
        async with self.sessions() as session:
            recorder = Recorder(session, self.publisher)
            try:
                event, execution = await recorder.record(rec)
            except NotFound as exc:
                raise ApplicationError(exc.message, non_retryable=True) from exc
            except TransitionRefused as exc:
                log.warning(
                    "execution.event_refused",
                    execution_id=rec.execution_id,
                    type=rec.type,
                    reason=exc.message,
                )
                return 0
            await recorder.commit()
        if rec.type in TERMINAL_EVENTS:  # a slot is free: start the tenant's next queued one
            async with self.sessions() as session:
                admission = Admission(session, activity.client(), self.publisher, self.settings)
                await admission.admit(execution.tenant_id)
        return event.seq

    def _step(self, entry: StepActivity) -> Callable[[StepCall], Awaitable[Any]]:
        run = entry.run
        assert run is not None

        async def execute(call: StepCall) -> Any:
            info = activity.info()
            beats = Beats()
            ctx = StepContext(
                tenant_id=call.tenant_id,
                execution_id=call.execution_id,
                step_id=call.step_id if call.index is None else f"{call.step_id}[{call.index}]",
                attempt=info.attempt,
                settings=self.settings,
                sessions=self.sessions,
                heartbeat=beats,
                cancelled=activity.is_cancelled,
                publish=self.publisher.publish,
            )
            if info.attempt > 1:
                await self._record_attempt(call.execution_id, ctx.step_id, info.attempt)
            try:
                output = await heartbeating(run(call.input, ctx), beat_every(info), beats)
            except StepInputError as exc:
                # Bad input never gets better on retry: fail the step now with the reason.
                kind = INPUT_REFUSED if isinstance(exc, StepInputRefused) else INPUT_ERROR
                raise ApplicationError(str(exc), type=kind, non_retryable=True) from exc
            except StepTransientError as exc:
                log.info(
                    "step.transient_failure",
                    activity=entry.name,
                    attempt=info.attempt,
                    error=str(exc),
                )
                raise ApplicationError(str(exc), type="StepTransientError") from exc
            self._check_output(entry.name, output)
            return output

        execute.__name__ = execute.__qualname__ = entry.name.replace(".", "_")
        return activity.defn(name=entry.name)(execute)

    async def _record_attempt(self, execution_id: str, step_id: str, attempt: int) -> None:
        """Count Temporal's retry of a step for resource usage (app/analytics); only retries
        write, and a failure to write never fails the step."""
        try:
            async with self.sessions() as session:
                await UsageService(session).record_attempt(
                    uuid.UUID(execution_id), step_id, attempt
                )
                await session.commit()
        except Exception as exc:  # analytics must not cost an execution its step
            log.warning("step.attempt_not_recorded", step_id=step_id, error=repr(exc))

    def _check_output(self, name: str, output: Any) -> None:
        check_step_output(name, output, self.settings)


def check_step_output(name: str, output: Any, settings: Settings) -> None:
    """What a step returns enters the workflow's history and the audit trail: NaN, NUL or
    a value nested past MAX_JSON_DEPTH would fail them (a task retried forever), and an
    output over the limit would fail Temporal's payload check (2 MB) on completion. Fail
    the step now, permanently, saying what to change."""
    shape = shape_problem(output, settings.max_json_depth)
    if shape is not None:
        raise ApplicationError(
            f"{name} produced output that {shape}; a step's output must be plain JSON "
            f"nested at most {settings.max_json_depth} levels (MAX_JSON_DEPTH)",
            type=STEP_OUTPUT_INVALID,
            non_retryable=True,
        )
    size = compact_size(output)
    limit = settings.max_step_output_bytes
    if size > limit:
        raise ApplicationError(
            f"{name} produced {size} bytes of output; a step's output may be at most "
            f"{limit} bytes (MAX_STEP_OUTPUT_BYTES): read or return less, e.g. a file path "
            "instead of its content",
            type=STEP_OUTPUT_INVALID,
            non_retryable=True,
        )
