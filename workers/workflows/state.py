"""RunState: what TemplateWorkflow knows about its execution (progress, pauses, events
received, the expression budget left) and what every part of it does with that: render
expressions within the budget, check a rendered step input's size, record an event.

Every transition is written by the `execution.record_event` activity (commit to PostgreSQL,
then publish to Redis). Event keys are derived from step ids, so a retried recording writes
once. Expressions are rendered here with the sandboxed Jinja2 (pure).

Workflow code: deterministic, no I/O (activities only).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import (
        RECORD_EVENT_ACTIVITY,
        Control,
        EventRecord,
        RunInput,
        StepPlan,
        run_key,
    )
    from app.templates.expressions import Budget, ExpressionError, Programs, json_size, render

from workers.workflows.patches import LIMITS_PATCH, LOCAL_RECORD_PATCH
from workers.workflows.step_calls import StepFailed

# Recording must outlast a database blip, so it retries for a long time with backoff.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
RECORD_TIMEOUT = timedelta(seconds=30)


class RunState:
    """The execution's state and the helpers shared by TemplateWorkflow's parts (the classes
    it is built from: Enhancing, FanOut)."""

    def __init__(self) -> None:
        self._done = 0
        self._total = 0
        self._running: list[str] = []
        self._completed: list[str] = []
        self._status = "PENDING"
        self._input: RunInput | None = None
        self._events: dict[str, list[Any]] = {}
        self._paused_by: Control | None = None
        self._resumed_by: Control | None = None
        self._pauses = 0
        self._partial: dict[str, float] = {}  # a running fan-out step: share of items done
        self._work = Budget()  # what the execution's expressions may still do (set in run)
        self._pooled = False  # whether they share that pool (EXPRESSION_POOL_PATCH)

    def _eval(
        self,
        value: Any,
        context: dict[str, Any],
        *,
        pooled: bool = True,
        programs: Programs | None = None,
    ) -> Any:
        """Render within the execution's expression budget (`pooled`, for executions started
        with the pool; else within one rendering's). Whatever goes wrong is an ExpressionError,
        so it fails a step (or falls back), never the workflow task."""
        try:
            if pooled and self._pooled:
                return render(value, context, pool=self._work, programs=programs)
            return render(value, context, self._work.limits, programs=programs)
        except ExpressionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a wedged workflow task is worse than any error
            raise ExpressionError(f"{type(exc).__name__}: {str(exc)[:200]}") from None

    def _render(
        self,
        step: StepPlan,
        value: Any,
        context: dict[str, Any],
        programs: Programs | None = None,
    ) -> Any:
        try:
            return self._eval(value, context, programs=programs)
        except ExpressionError as exc:
            raise StepFailed(step.id, f"step {step.id}: {exc}") from None

    @staticmethod
    def _check_input(inp: RunInput, step: StepPlan, payload: Any, index: int | None = None) -> int:
        """A rendered step input must fit in a Temporal payload: refused (the step fails)
        before it is scheduled. Returns its size (compact JSON bytes)."""
        limit = inp.limits.max_step_input_bytes
        where = f"step {step.id}" + (f" item {index}" if index is not None else "")
        try:
            size = json_size(payload, limit)
        except (TypeError, ValueError) as exc:  # would fail the workflow task when scheduled
            raise StepFailed(step.id, f"{where}: its input is not JSON: {exc}") from None
        if size > limit and workflow.patched(LIMITS_PATCH):
            raise StepFailed(
                step.id, f"{where}: its input is more than {limit} bytes as JSON (the limit)"
            )
        return size

    @staticmethod
    def _context(inp: RunInput, outputs: dict[str, Any]) -> dict[str, Any]:
        return {"params": inp.params, "steps": dict(outputs), "execution": {"id": inp.execution_id}}

    def _percent(self) -> float:
        done = self._done + sum(self._partial.values())
        return round(100.0 * done / self._total, 2) if self._total else 0.0

    async def _record(
        self,
        key: str,
        type_: str,
        *,
        step_id: str | None = None,
        message: str | None = None,
        result: Any = None,
        error: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        assert self._input is not None
        run = self._input.run_number
        execute = (
            workflow.execute_local_activity
            if workflow.patched(LOCAL_RECORD_PATCH)
            else workflow.execute_activity
        )
        await execute(
            RECORD_EVENT_ACTIVITY,
            EventRecord(
                execution_id=self._input.execution_id,
                key=run_key(run, key),
                payload={"actor": "system", **(payload or {})},
                type=type_,
                status=self._status,
                progress=100.0 if type_ == "COMPLETED" else self._percent(),
                step_id=step_id,
                message=message,
                result=result,
                error=error,
            ),
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )
