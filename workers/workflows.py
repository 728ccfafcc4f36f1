"""TemplateWorkflow: runs a template version's steps in order.

Deterministic and free of I/O: step inputs are rendered here with the sandboxed Jinja2
expressions (pure functions), timers are Temporal timers, and every transition is written by
the `execution.record_event` activity, which commits to PostgreSQL and then publishes to Redis.
Event keys are derived from the step and attempt, so a retried recording writes once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import (
        RECORD_EVENT_ACTIVITY,
        WORKFLOW_NAME,
        EventRecord,
        Progress,
        RunInput,
        StepCall,
        StepPlan,
    )
    from app.steps import WORKFLOW_NATIVE
    from app.templates.expressions import ExpressionError, render

# Recording must outlast a database blip, so it retries for a long time with backoff.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
RECORD_TIMEOUT = timedelta(seconds=30)


class StepFailed(Exception):
    def __init__(self, step_id: str, message: str) -> None:
        super().__init__(message)
        self.step_id = step_id
        self.message = message


@workflow.defn(name=WORKFLOW_NAME)
class TemplateWorkflow:
    def __init__(self) -> None:
        self._done = 0
        self._total = 0
        self._current: str | None = None
        self._status = "PENDING"
        self._input: RunInput | None = None

    @workflow.query
    def progress(self) -> Progress:
        percent = round(100.0 * self._done / self._total, 2) if self._total else 0.0
        return Progress(self._done, self._total, self._current, percent, self._status)

    @workflow.run
    async def run(self, inp: RunInput) -> Any:
        self._input = inp
        self._total = len(inp.steps)
        self._status = "RUNNING"
        await self._record(
            "started", "STARTED", message=f"{inp.template_name} v{inp.template_version}"
        )
        outputs: dict[str, Any] = {}
        try:
            for step in inp.steps:
                outputs[step.id] = await self._run_step(inp, step, outputs)
                self._done += 1
                await self._record(f"step:{step.id}:completed", "STEP_COMPLETED", step_id=step.id)
            self._current = None
            result = (
                render(inp.output, self._context(inp, outputs))
                if inp.output is not None
                else (outputs[inp.steps[-1].id] if inp.steps else None)
            )
        except StepFailed as failed:
            self._status = "FAILED"
            await self._record(
                f"step:{failed.step_id}:failed",
                "STEP_FAILED",
                step_id=failed.step_id,
                message=failed.message,
            )
            await self._record("failed", "FAILED", message=failed.message, error=failed.message)
            raise ApplicationError(failed.message, type="StepFailed", non_retryable=True) from None
        except ExpressionError as exc:
            self._status = "FAILED"
            message = f"output: {exc}"
            await self._record("failed", "FAILED", message=message, error=message)
            raise ApplicationError(message, type="StepFailed", non_retryable=True) from None
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            self._status = "CANCELLED"
            await self._record("cancelled", "CANCELLED", message="cancelled")
            raise
        self._status = "COMPLETED"
        await self._record("completed", "COMPLETED", result=result)
        return result

    async def _run_step(self, inp: RunInput, step: StepPlan, outputs: dict[str, Any]) -> Any:
        self._current = step.id
        await self._record(
            f"step:{step.id}:started", "STEP_STARTED", step_id=step.id, message=step.activity
        )
        try:
            step_input = render(step.input, self._context(inp, outputs))
        except ExpressionError as exc:
            raise StepFailed(step.id, f"step {step.id}: {exc}") from None
        if step.activity in WORKFLOW_NATIVE:
            return await self._native(inp, step, step_input)
        try:
            return await workflow.execute_activity(
                step.activity,
                StepCall(inp.execution_id, inp.tenant_id, step.id, step_input),
                start_to_close_timeout=timedelta(seconds=step.timeout_seconds),
                retry_policy=RetryPolicy(
                    maximum_attempts=step.retry.max_attempts,
                    initial_interval=timedelta(seconds=step.retry.initial_interval_seconds),
                    backoff_coefficient=step.retry.backoff,
                    maximum_interval=timedelta(seconds=step.retry.max_interval_seconds),
                ),
            )
        except ActivityError as exc:
            if is_cancelled_exception(exc):
                raise
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
            raise StepFailed(
                step.id, f"step {step.id} ({step.activity}) failed: {message}"
            ) from None

    async def _native(self, inp: RunInput, step: StepPlan, step_input: dict[str, Any]) -> Any:
        if step.activity == "wait.timer":
            seconds = step_input.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise StepFailed(
                    step.id, f"step {step.id}: `seconds` must be a number, got {seconds!r}"
                )
            if not 0 <= seconds <= inp.max_wait_seconds:
                raise StepFailed(
                    step.id,
                    f"step {step.id}: `seconds` must be between 0 and {inp.max_wait_seconds:g}",
                )
            await workflow.sleep(timedelta(seconds=seconds))
            return {"waited_seconds": seconds}
        raise StepFailed(step.id, f"step {step.id}: no workflow handler for {step.activity}")

    @staticmethod
    def _context(inp: RunInput, outputs: dict[str, Any]) -> dict[str, Any]:
        return {"params": inp.params, "steps": outputs, "execution": {"id": inp.execution_id}}

    async def _record(
        self,
        key: str,
        type_: str,
        *,
        step_id: str | None = None,
        message: str | None = None,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        assert self._input is not None
        percent = round(100.0 * self._done / self._total, 2) if self._total else 0.0
        await workflow.execute_activity(
            RECORD_EVENT_ACTIVITY,
            EventRecord(
                execution_id=self._input.execution_id,
                key=key,
                type=type_,
                status=self._status,
                progress=100.0 if type_ == "COMPLETED" else percent,
                step_id=step_id,
                message=message,
                result=result,
                error=error,
            ),
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )
