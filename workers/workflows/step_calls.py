"""Step activities as the workflows call them: one call (`run_activity`), a call that runs
again on the plain input when the step refuses its AI-enhanced one (`run_refusable`), and a
fan-out's items with bounded concurrency (`run_items`), their outputs measured as they arrive
(`OutputTally`). A step's failure is a StepFailed naming the step (and the item).

Workflow code: deterministic, no I/O (activities only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import INPUT_REFUSED, StepCall, StepPlan
    from app.templates.expressions import json_size

from workers.enhancements import ItemPoints
from workers.workflows.patches import REJECTED_PATCH


class StepFailed(Exception):
    def __init__(self, step_id: str, message: str, *, input_rejected: bool = False) -> None:
        super().__init__(message)
        self.step_id = step_id
        self.message = message
        self.input_rejected = input_rejected  # refused before it did anything (StepInputRefused)


class OutputTally:
    """The compact JSON size of a fan-out's item outputs (a list), added up as each arrives
    (in completion order, which the history fixes, so a replay fails at the same item). Each
    output is measured piece by piece, never past what is left, and the step fails as soon
    as the total passes `limit`."""

    def __init__(self, step: StepPlan, limit: int, refusal: str) -> None:
        self.step = step
        self.limit = limit
        self.refusal = refusal  # what the failure says after "step <id>: "
        self.total = 2  # the list's brackets

    def add(self, output: Any, index: int) -> None:
        left = max(self.limit - self.total, 0)
        self.total += json_size(output, left) + 1  # and its comma
        if self.total > self.limit:
            raise StepFailed(
                self.step.id, f"step {self.step.id}: {self.refusal} (passed at item {index})"
            )


def step_output_tally(step: StepPlan, limit: int) -> OutputTally:
    return OutputTally(
        step,
        limit,
        f"its items' outputs together are more than {limit} bytes as JSON, the limit for one"
        " step's output; make them smaller or the fan-out shorter",
    )


async def _all_or_cancel(factories: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run concurrently, results in order. On the first failure cancel the rest, wait for them,
    and raise that failure (the earliest in input order that is not a cancellation)."""
    tasks: list[asyncio.Task[Any]] = [asyncio.ensure_future(f()) for f in factories]
    try:
        _, pending = await workflow.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # this workflow (or the step running us) was cancelled
        for task in tasks:
            task.cancel()
        await workflow.wait(tasks)
        raise
    if pending:
        for task in pending:
            task.cancel()
        await workflow.wait(pending)
    errors = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
    real = [e for e in errors if e is not None and not is_cancelled_exception(e)]
    if real or errors:
        raise (real or errors)[0]  # type: ignore[misc]
    return [t.result() for t in tasks]


async def run_activity(
    inp_ids: tuple[str, str], step: StepPlan, payload: Any, index: int | None
) -> Any:
    execution_id, tenant_id = inp_ids
    try:
        return await workflow.execute_activity(
            step.activity,
            StepCall(execution_id, tenant_id, step.id, payload, index),
            task_queue=step.task_queue,
            start_to_close_timeout=timedelta(seconds=step.timeout_seconds),
            heartbeat_timeout=timedelta(seconds=step.heartbeat_seconds * 3)
            if step.heartbeat_seconds
            else None,
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
        rejected = isinstance(cause, ApplicationError) and cause.type == INPUT_REFUSED
        where = f"step {step.id}" + (f" item {index}" if index is not None else "")
        raise StepFailed(
            step.id, f"{where} ({step.activity}) failed: {message}", input_rejected=rejected
        ) from None


async def run_refusable(
    ids: tuple[str, str],
    step: StepPlan,
    enhanced: dict[str, Any],
    plain: dict[str, Any],
    index: int | None,
    refused: Callable[[str], Awaitable[None]],
) -> Any:
    """Run the step on its AI-enhanced input; when it refuses that input before doing anything
    (say, a subject with a line break), call `refused(message)` and run it on its plain input:
    AI output never fails a step. Other failures fail it as usual."""
    try:
        return await run_activity(ids, step, enhanced, index)
    except StepFailed as failed:
        if enhanced == plain or not failed.input_rejected or not workflow.patched(REJECTED_PATCH):
            raise
        message = failed.message
    await refused(message)
    return await run_activity(ids, step, plain, index)


async def run_items(
    ids: tuple[str, str],
    step: StepPlan,
    inputs: list[Any],
    first_index: int,
    points: ItemPoints | None = None,
    tally: OutputTally | None = None,
) -> list[Any]:
    """One activity per input, at most `for_each_concurrency` at a time, outputs in order;
    with `points`, each item's enhanced points run (and are tallied there) before it; with
    `tally`, each output is measured as it arrives (the step fails past its limit)."""
    if not inputs:
        return []  # nothing to wait for (workflow.wait refuses an empty list)
    gate = asyncio.Semaphore(step.for_each_concurrency)

    def item(i: int, payload: Any) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            async with gate:
                if points is None:
                    output = await run_activity(ids, step, payload, first_index + i)
                else:
                    enhanced = await points.enhance(ids, step, payload, first_index + i, i)

                    async def refused(message: str) -> None:
                        points.rejected(first_index + i, message)

                    output = await run_refusable(
                        ids, step, enhanced, payload, first_index + i, refused
                    )
            if tally is not None:
                tally.add(output, first_index + i)
            return output

        return run

    return await _all_or_cancel([item(i, p) for i, p in enumerate(inputs)])
