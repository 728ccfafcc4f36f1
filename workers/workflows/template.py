"""TemplateWorkflow runs a template version's steps as a dependency graph.

Semantics: steps whose `needs` are all finished run, in parallel; `when` false skips a step
(its output is null); `for_each` runs the activity once per item (`item`, `index` in scope) with
bounded concurrency (fan_out.py); `wait.timer` sleeps; `wait.event` waits for
`sendExecutionEvent`. When a step fails or the execution is cancelled, running steps are
cancelled and the `compensate` actions of finished steps run in reverse order of completion.

Deterministic and free of I/O: waits are Temporal timers and signals, and every transition is
recorded by an activity (state.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from app.executions.step_usage import step_usage
    from app.executions.workflow_io import (
        EVENT_SIGNAL,
        PAUSE_SIGNAL,
        RESUME_SIGNAL,
        WORKFLOW_NAME,
        Control,
        ExternalEvent,
        Progress,
        RunInput,
        StepCall,
        StepPlan,
    )
    from app.templates.expressions import Budget, ExpressionError, Limits, wrap

from workers.workflows.fan_out import FanOut
from workers.workflows.patches import EXPRESSION_POOL_PATCH
from workers.workflows.step_calls import StepFailed

COMPENSATE_RETRY = RetryPolicy(maximum_attempts=3)
MAX_KEPT_OUTPUT = 256 * 1024  # bytes of JSON; larger outputs are recomputed on retry
# All the expressions of one execution together may do this many renderings' worth of work
# (max_expression_steps each). Work is counted, not timed, so replays agree. The pool bounds
# the *rendering* done in one workflow activation (all ready steps, all items of a fan-out) to
# about 1 s here; compiling is not counted in it: that is bounded when the spec is validated
# (MAX_SPEC_EXPRESSIONS, MAX_SPEC_EXPRESSION_NODES in app/templates/expressions/: all of a
# spec's expressions compile cold in ~0.2 s). Together they keep an activation below Temporal's
# deadlock detector (2 s), which would otherwise fail the workflow task forever.
EXECUTION_EXPRESSION_BUDGETS = 5


def _output_payload(output: Any) -> dict[str, Any]:
    """A step's output kept in its event (what retryExecution reuses), unless it is large."""
    size = len(json.dumps(output, default=str))
    return {"output": output} if size <= MAX_KEPT_OUTPUT else {"output_truncated": size}


@workflow.defn(name=WORKFLOW_NAME)
class TemplateWorkflow(FanOut):
    @workflow.query
    def progress(self) -> Progress:
        assert self._input is not None or self._total == 0
        order = [s.id for s in self._input.steps] if self._input else []
        running = sorted(self._running, key=order.index)
        current = running[0] if running else None
        return Progress(self._done, self._total, current, self._percent(), self._status)

    @workflow.signal(name=PAUSE_SIGNAL)
    def pause(self, control: Control) -> None:
        self._paused_by = control

    @workflow.signal(name=RESUME_SIGNAL)
    def resume(self, control: Control) -> None:
        if self._paused_by is not None:
            self._paused_by = None
            self._resumed_by = control

    @workflow.signal(name=EVENT_SIGNAL)
    def receive_event(self, event: ExternalEvent) -> None:
        self._events.setdefault(event.name, []).append(event.payload)

    @workflow.run
    async def run(self, inp: RunInput) -> Any:
        self._input = inp
        limits = Limits.of(inp.limits)
        self._work = Budget(limits, limits.steps * EXECUTION_EXPRESSION_BUDGETS)
        self._work.refusal = (
            f"the execution's expressions did more work than allowed ({self._work.left} steps)"
        )
        self._pooled = workflow.patched(EXPRESSION_POOL_PATCH)
        self._total = len(inp.steps)
        self._status = "RUNNING"
        await self._record(
            "started", "STARTED", message=f"{inp.template_name} v{inp.template_version}"
        )
        outputs: dict[str, Any] = dict(inp.completed)
        self._done = len(inp.completed)
        try:
            await self._run_graph(inp, outputs)
            result = self._result(inp, outputs)
        except StepFailed as failed:
            await self._record(
                f"step:{failed.step_id}:failed",
                "STEP_FAILED",
                step_id=failed.step_id,
                message=failed.message,
            )
            await self._compensate(inp, outputs)
            self._status = "FAILED"
            await self._record("failed", "FAILED", message=failed.message, error=failed.message)
            raise ApplicationError(failed.message, type="StepFailed", non_retryable=True) from None
        except BaseException as exc:
            if not is_cancelled_exception(exc):
                raise
            await self._compensate(inp, outputs)
            self._status = "CANCELLED"
            await self._record("cancelled", "CANCELLED", message="cancelled")
            raise
        self._status = "COMPLETED"
        await self._record("completed", "COMPLETED", result=result)
        return result

    def _result(self, inp: RunInput, outputs: dict[str, Any]) -> Any:
        if inp.output is None:
            return outputs.get(inp.steps[-1].id) if inp.steps else None
        try:
            return self._eval(inp.output, self._context(inp, outputs))
        except ExpressionError as exc:
            raise StepFailed(inp.steps[-1].id, f"output: {exc}") from None

    async def _run_graph(self, inp: RunInput, outputs: dict[str, Any]) -> None:
        steps = {s.id: s for s in inp.steps}
        order = [s.id for s in inp.steps]
        finished: set[str] = {s for s in order if s in inp.completed}
        waiting = [s for s in order if s not in finished]
        running: dict[str, asyncio.Task[Any]] = {}
        try:
            while waiting or running:
                if self._paused_by is not None:
                    await self._hold()
                for sid in [s for s in waiting if set(steps[s].needs) <= finished]:
                    waiting.remove(sid)
                    running[sid] = asyncio.create_task(self._run_step(inp, steps[sid], outputs))
                if not running:
                    raise StepFailed(waiting[0], f"step {waiting[0]}: its needs can never finish")
                # A pause request also wakes the loop, so PAUSED is recorded at once.
                pause = asyncio.ensure_future(
                    workflow.wait_condition(lambda: self._paused_by is not None)
                )
                done, _ = await workflow.wait(
                    [*running.values(), pause], return_when=asyncio.FIRST_COMPLETED
                )
                if not pause.done():
                    pause.cancel()
                for sid in [s for s in order if s in running and running[s] in done]:
                    outputs[sid] = running.pop(sid).result()
                    finished.add(sid)
        except BaseException:
            for task in running.values():
                task.cancel()
            if running:
                await workflow.wait(running.values())
            raise

    async def _hold(self) -> None:
        """Paused: no new step starts; running ones finish; resume continues the graph."""
        control = self._paused_by
        assert control is not None
        self._status = "PAUSED"
        self._pauses += 1
        await self._record(
            f"paused:{self._pauses}",
            "PAUSED",
            message=control.reason or "paused",
            payload={"actor": control.actor},
        )
        await workflow.wait_condition(lambda: self._paused_by is None)
        resumed = self._resumed_by
        self._status = "RUNNING"
        await self._record(
            f"resumed:{self._pauses}",
            "RESUMED",
            message="resumed",
            payload={"actor": resumed.actor if resumed else "system"},
        )

    async def _run_step(self, inp: RunInput, step: StepPlan, outputs: dict[str, Any]) -> Any:
        context = self._context(inp, outputs)
        try:
            if step.when and not self._eval(wrap(step.when), context):
                self._done += 1
                await self._record(
                    f"step:{step.id}:skipped",
                    "STEP_SKIPPED",
                    step_id=step.id,
                    message=f"when: {step.when}",
                )
                return None
        except ExpressionError as exc:
            raise StepFailed(step.id, f"step {step.id}: when: {exc}") from None
        self._running.append(step.id)
        await self._record(
            f"step:{step.id}:started", "STEP_STARTED", step_id=step.id, message=step.activity
        )
        try:
            if step.for_each:
                output = await self._fan_out(inp, step, context)
            elif step.activity in ("wait.timer", "wait.event"):
                output = await self._wait(inp, step, self._render(step, step.input, context))
            else:
                plain = self._render(step, step.input, context)
                self._check_input(inp, step, plain)
                enhanced, applied = await self._enhance(inp, step, context, plain)
                output = await self._run_enhanced(inp, step, plain, enhanced, applied)
            await self._record_ai_step(step, output)
        finally:
            self._running.remove(step.id)
        self._partial.pop(step.id, None)  # with the step counted done, progress never drops
        self._done += 1
        self._completed.append(step.id)
        await self._record(
            f"step:{step.id}:completed",
            "STEP_COMPLETED",
            step_id=step.id,
            payload={
                **_output_payload(output),
                "usage": step_usage(step.activity, output, fanned=bool(step.for_each)),
            },
        )
        return output

    async def _wait(self, inp: RunInput, step: StepPlan, args: dict[str, Any]) -> Any:
        limit = inp.max_wait_seconds
        if step.activity == "wait.timer":
            seconds = args.get("seconds")
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not 0 <= seconds <= limit
            ):
                raise StepFailed(
                    step.id, f"step {step.id}: `seconds` must be a number from 0 to {limit:g}"
                )
            await workflow.sleep(timedelta(seconds=seconds))
            return {"waited_seconds": seconds}
        name = args.get("event")
        timeout = args.get("timeout_seconds", limit)
        if not isinstance(name, str) or not name:
            raise StepFailed(step.id, f"step {step.id}: `event` must name the event to wait for")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= limit
        ):
            raise StepFailed(
                step.id, f"step {step.id}: `timeout_seconds` must be from 0 to {limit:g}"
            )
        try:
            await workflow.wait_condition(
                lambda: bool(self._events.get(name)), timeout=timedelta(seconds=timeout)
            )
        except TimeoutError:
            if args.get("on_timeout", "fail") == "continue":
                return {"event": name, "timed_out": True, "payload": None}
            raise StepFailed(
                step.id, f"step {step.id}: no {name!r} event within {timeout:g}s"
            ) from None
        return {"event": name, "timed_out": False, "payload": self._events[name].pop(0)}

    async def _compensate(self, inp: RunInput, outputs: dict[str, Any]) -> None:
        steps = {s.id: s for s in inp.steps}
        todo = [steps[sid] for sid in reversed(self._completed) if steps[sid].compensate]
        if not todo:
            return
        await self._record("compensating", "COMPENSATING", message=", ".join(s.id for s in todo))
        context = self._context(inp, outputs)
        for step in todo:
            plan = step.compensate
            assert plan is not None
            try:
                # Not from the execution's budget: cleanup runs even when a step used it up.
                scope = {**context, "output": outputs.get(step.id)}
                payload = self._eval(plan.input, scope, pooled=False)
                await workflow.execute_activity(
                    plan.activity,
                    StepCall(inp.execution_id, inp.tenant_id, step.id, payload),
                    task_queue=plan.task_queue,
                    start_to_close_timeout=timedelta(seconds=plan.timeout_seconds),
                    # As a step's (step_calls.run_activity): a hung worker is noticed. Plans
                    # recorded before this field have None: the same command as they had.
                    heartbeat_timeout=timedelta(seconds=plan.heartbeat_seconds * 3)
                    if plan.heartbeat_seconds
                    else None,
                    retry_policy=COMPENSATE_RETRY,
                )
            except (ActivityError, ExpressionError) as exc:
                cause = getattr(exc, "cause", None)
                reason = cause.message if isinstance(cause, ApplicationError) else str(exc)
                await self._record(
                    f"step:{step.id}:compensation-failed",
                    "COMPENSATION_FAILED",
                    step_id=step.id,
                    message=f"{plan.activity}: {reason}",
                )
            else:
                await self._record(
                    f"step:{step.id}:compensated",
                    "STEP_COMPENSATED",
                    step_id=step.id,
                    message=plan.activity,
                )
