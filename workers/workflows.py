"""TemplateWorkflow runs a template version's steps as a dependency graph; ForEachBatchWorkflow
runs one slice of a large fan-out as a child workflow, so a 10,000-item step stays well inside
Temporal's history limits.

Deterministic and free of I/O: expressions are rendered here with the sandboxed Jinja2 (pure),
waits are Temporal timers and signals, and every transition is written by the
`execution.record_event` activity (commit to PostgreSQL, then publish to Redis). Event keys are
derived from step ids, so a retried recording writes once.

Semantics: steps whose `needs` are all finished run, in parallel; `when` false skips a step
(its output is null); `for_each` runs the activity once per item (`item`, `index` in scope) with
bounded concurrency; `wait.timer` sleeps; `wait.event` waits for `sendExecutionEvent`. When a
step fails or the execution is cancelled, running steps are cancelled and the `compensate`
actions of finished steps run in reverse order of completion.

Executions started before a release replay its workflow code: changed decisions sit behind
`workflow.patched(...)` (the patch constants below). The bounded expression engine (issue 9)
is only partly patched: the execution-wide expression pool (EXPRESSION_POOL_PATCH), the
fan-out and input-size limits (LIMITS_PATCH) and the limit on a fan-out's outputs together
(FAN_OUT_OUTPUT_PATCH) are, so an old history is not cut short by them.
Each rendering's own budget, the refused filters and statements (macros, `random`, `batch`,
`str.format`...) and a failed rendering failing its step (instead of the workflow task) are
not: an execution started before that release whose expressions used what is now refused
fails that step on replay. Operators drain such executions (let them finish, or cancel them)
before upgrading the workers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from app.executions.workflow_io import (
        BATCH_WORKFLOW_NAME,
        EVENT_SIGNAL,
        INPUT_REFUSED,
        PAUSE_SIGNAL,
        RECORD_EVENT_ACTIVITY,
        RESUME_SIGNAL,
        WORKFLOW_NAME,
        BatchInput,
        Control,
        EventRecord,
        ExternalEvent,
        ItemEnhancement,
        Progress,
        RunInput,
        StepCall,
        StepPlan,
        run_key,
    )
    from app.templates.expressions import (
        Budget,
        ExpressionError,
        Limits,
        Programs,
        json_size,
        render,
        wrap,
    )

from workers.enhancements import (
    ItemPoints,
    active_points,
    apply,
    call,
    decide,
    failed_outcome,
    not_enhanced,
    outcome_of,
    tally,
)

# Recording must outlast a database blip, so it retries for a long time with backoff.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
RECORD_TIMEOUT = timedelta(seconds=30)
COMPENSATE_RETRY = RetryPolicy(maximum_attempts=3)
CHILD_CONCURRENCY = 4
MAX_KEPT_OUTPUT = 256 * 1024  # bytes of JSON; larger outputs are recomputed on retry
# All the expressions of one execution together may do this many renderings' worth of work
# (max_expression_steps each). Work is counted, not timed, so replays agree. The pool bounds
# the *rendering* done in one workflow activation (all ready steps, all items of a fan-out) to
# about 1 s here; compiling is not counted in it: that is bounded when the spec is validated
# (MAX_SPEC_EXPRESSIONS, MAX_SPEC_EXPRESSION_NODES in app/templates/expressions/: all of a
# spec's expressions compile cold in ~0.2 s). Together they keep an activation below Temporal's
# deadlock detector (2 s), which would otherwise fail the workflow task forever.
EXECUTION_EXPRESSION_BUDGETS = 5
# Patch: for_each item count and step input size limits (RunInput.limits).
LIMITS_PATCH = "run-limits"
# Patch: the execution-wide expression pool (EXECUTION_EXPRESSION_BUDGETS). Executions started
# before it render each value within its own budget only, as they did, so their histories replay.
EXPRESSION_POOL_PATCH = "expression-pool"
# Patch: a fan-out's item outputs together are measured as they arrive, inline and in each
# child slice, against RunLimits.max_step_output_bytes (they become one step output, which
# goes into events and later steps' inputs); a slice's result stays under Temporal's payload
# limit. Before it, a slice of 200 outputs of 100 KB failed its completion (20 MB over 2 MB)
# forever, and the execution stayed RUNNING.
FAN_OUT_OUTPUT_PATCH = "fan-out-output-limit"
# A child slice returns its outputs in one payload, which Temporal refuses past 2 MiB
# (2,097,152 bytes; a refused completion is retried forever): the outputs stop at
# BATCH_OUTPUT_BYTES whatever the step's limit, the whole result (AI outcomes too) at
# BATCH_RESULT_BYTES.
BATCH_OUTPUT_BYTES = 1_500_000
BATCH_RESULT_BYTES = 2_000_000


def _output_payload(output: Any) -> dict[str, Any]:
    """A step's output kept in its event (what retryExecution reuses), unless it is large."""
    size = len(json.dumps(output, default=str))
    return {"output": output} if size <= MAX_KEPT_OUTPUT else {"output_truncated": size}


class StepFailed(Exception):
    def __init__(self, step_id: str, message: str, *, input_rejected: bool = False) -> None:
        super().__init__(message)
        self.step_id = step_id
        self.message = message
        self.input_rejected = input_rejected  # refused before it did anything (StepInputRefused)


# Patch: a step that refuses its AI-enhanced input runs again on its plain input.
REJECTED_PATCH = "baseline-on-rejected-input"


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


@workflow.defn(name=BATCH_WORKFLOW_NAME)
class ForEachBatchWorkflow:
    @workflow.run
    async def run(self, inp: BatchInput) -> list[Any] | dict[str, Any]:
        points = ItemPoints(inp.enhancements, inp.ai_task_queue) if inp.enhancements else None
        tally = None
        if inp.max_output_bytes and workflow.patched(FAN_OUT_OUTPUT_PATCH):
            tally = self._tally(inp)
        try:
            outputs = await run_items(
                (inp.execution_id, inp.tenant_id),
                inp.step,
                inp.inputs,
                inp.first_index,
                points,
                tally,
            )
        except StepFailed as failed:
            raise ApplicationError(failed.message, type="StepFailed", non_retryable=True) from None
        result = outputs if points is None else {"outputs": outputs, "outcomes": points.ordered()}
        # Outputs alone were measured as they came (at most BATCH_OUTPUT_BYTES): only with
        # AI outcomes beside them can the whole result still pass the payload limit.
        if (
            tally is not None
            and points is not None
            and json_size(result, BATCH_RESULT_BYTES) > BATCH_RESULT_BYTES
        ):
            # Outputs within their bound and AI outcomes together: failing here is clear,
            # a refused completion would be retried forever.
            message = (
                f"step {inp.step.id}: items {inp.first_index} to"
                f" {inp.first_index + len(inp.inputs) - 1} return more than {BATCH_RESULT_BYTES}"
                " bytes as JSON together (the most one batch may return); make their outputs"
                " smaller"
            )
            raise ApplicationError(message, type="StepFailed", non_retryable=True)
        return result

    @staticmethod
    def _tally(inp: BatchInput) -> OutputTally:
        """The step's limit, or a payload's when that is smaller."""
        if inp.max_output_bytes <= BATCH_OUTPUT_BYTES:
            return step_output_tally(inp.step, inp.max_output_bytes)
        last = inp.first_index + len(inp.inputs) - 1
        return OutputTally(
            inp.step,
            BATCH_OUTPUT_BYTES,
            f"the outputs of items {inp.first_index} to {last} together are more than"
            f" {BATCH_OUTPUT_BYTES} bytes as JSON, the most one batch of items may return;"
            " make them smaller",
        )


@workflow.defn(name=WORKFLOW_NAME)
class TemplateWorkflow:
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
            payload=_output_payload(output),
        )
        return output

    async def _enhance(
        self, inp: RunInput, step: StepPlan, context: dict[str, Any], step_input: dict[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """Each active enhancement point of a single step: decide (recorded in the history, so
        a replay decides the same), run the AI task, apply its output to the step input; on any
        failure the step keeps its plain input. Every decision is a STEP_ENHANCED event.
        Returns the step input and the tasks whose output it carries."""
        active = active_points(step)
        applied: list[str] = []
        if not active or not workflow.patched("enhancement-points"):
            return step_input, applied
        for i, point in enumerate(active):
            outcome = not_enhanced(await decide(inp.tenant_id, inp.ai_task_queue, point))
            if outcome is None:
                try:
                    payload = self._eval(point["input"], context)
                except ExpressionError as exc:
                    outcome = failed_outcome("ENHANCE", "INPUT_ERROR", str(exc)[:300])
                else:
                    call_ = StepCall(inp.execution_id, inp.tenant_id, step.id, payload)
                    out, outcome = await call(
                        call_, point["task"], inp.ai_task_queue, step.timeout_seconds
                    )
                    changed = apply(step_input, point["apply"], out) if out is not None else None
                    if changed is not None and changed != step_input:
                        step_input = changed
                        applied.append(point["task"])
            await self._record_point(step, str(i), {"task": point["task"], **outcome})
        return step_input, applied

    async def _run_enhanced(
        self,
        inp: RunInput,
        step: StepPlan,
        plain: dict[str, Any],
        enhanced: dict[str, Any],
        applied: list[str],
    ) -> Any:
        """Run the step (`run_refusable`); a refusal of the AI output is recorded, naming the
        tasks whose output was dropped."""

        async def refused(message: str) -> None:
            rejected = failed_outcome("ENHANCE", "STEP_REJECTED", message[:300])
            record = {"task": ", ".join(applied), "tasks": applied, **rejected}
            await self._record_point(step, "rejected", record)

        ids = (inp.execution_id, inp.tenant_id)
        return await run_refusable(ids, step, enhanced, plain, None, refused)

    async def _record_point(self, step: StepPlan, key: str, record: dict[str, Any]) -> None:
        items = (
            f" on {record['enhanced_items']} of {record['items']} items"
            if "items" in record
            else ""
        )
        error = f": {record['error']}" if record.get("error") else ""
        decided = f"{record['task']}: {record['decision']} ({record.get('reason')})"
        await self._record(
            f"step:{step.id}:enhancement:{key}",
            "STEP_ENHANCED",
            step_id=step.id,
            message=f"{decided}{items}{error}",
            payload={"enhancement": record},
        )

    async def _record_ai_step(self, step: StepPlan, output: Any) -> None:
        """An `ai.*` step is its own enhancement point: tally what its activity did."""
        if not step.activity.startswith("ai.") or not workflow.patched("ai-step-records"):
            return
        fan_out = step.for_each is not None and isinstance(output, list)
        outputs = output if fan_out else [output]
        outcomes = [outcome_of(o.get("ai") if isinstance(o, dict) else None) for o in outputs]
        await self._record_point(
            step, "ai", tally(step.activity.removeprefix("ai."), outcomes, fan_out)
        )

    async def _decide_items(
        self, inp: RunInput, step: StepPlan, context: dict[str, Any], items: list[Any]
    ) -> list[tuple[dict[str, Any], dict[str, Any] | ItemEnhancement]]:
        """A fan-out step's points, decided once: (point, the baseline outcome of a point not
        enhanced | the point's per-item AI inputs)."""
        active = active_points(step)
        if not active or not items or not workflow.patched("item-enhancements"):
            return []
        plans: list[tuple[dict[str, Any], dict[str, Any] | ItemEnhancement]] = []
        for point in active:
            outcome = not_enhanced(await decide(inp.tenant_id, inp.ai_task_queue, point))
            if outcome is not None:
                plans.append((point, outcome))
            else:
                inputs: list[dict[str, Any] | None] = []
                programs: Programs = {}
                for i, item in enumerate(items):
                    try:
                        scope = {**context, "item": item, "index": i}
                        inputs.append(self._eval(point["input"], scope, programs=programs))
                    except ExpressionError:
                        inputs.append(None)
                plans.append((point, ItemEnhancement(point["task"], point["apply"], inputs)))
        return plans

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

    async def _fan_out(self, inp: RunInput, step: StepPlan, context: dict[str, Any]) -> list[Any]:
        items = self._render(step, wrap(step.for_each or ""), context)
        if not isinstance(items, list):
            raise StepFailed(
                step.id, f"step {step.id}: for_each gave {type(items).__name__}, not a list"
            )
        most = inp.limits.max_for_each_items
        if len(items) > most and workflow.patched(LIMITS_PATCH):
            raise StepFailed(
                step.id, f"step {step.id}: for_each gave {len(items)} items; the limit is {most}"
            )
        programs: Programs = {}  # each string compiles once for all the items
        inputs = [
            self._render(step, step.input, {**context, "item": item, "index": i}, programs)
            for i, item in enumerate(items)
        ]
        sizes = [self._check_input(inp, step, payload, i) for i, payload in enumerate(inputs)]
        plans = await self._decide_items(inp, step, context, items)
        enhanced = [plan for _, plan in plans if isinstance(plan, ItemEnhancement)]
        points = ItemPoints(enhanced, inp.ai_task_queue) if enhanced else None
        ids = (inp.execution_id, inp.tenant_id)
        size = max(1, inp.for_each_batch_size)
        inline = len(inputs) <= size
        limit = inp.limits.max_step_output_bytes
        tally = step_output_tally(step, limit) if workflow.patched(FAN_OUT_OUTPUT_PATCH) else None
        try:
            if inline:
                outputs = await run_items(ids, step, inputs, 0, points, tally)
                outcomes = points.ordered() if points else []
            else:
                self._check_batches(inp, step, sizes)
                outputs, outcomes = await self._fan_out_children(inp, step, inputs, enhanced, tally)
        except StepFailed:
            # The points are recorded as far as known: their decisions, and the AI outcomes of
            # the items run here before the failure (a child's are lost with its failure).
            if plans and workflow.patched("fan-out-failure-records"):
                known = points.ordered() if points is not None and inline else None
                await self._record_plans(step, plans, known, len(items))
            raise
        await self._record_plans(step, plans, outcomes, len(items))
        return outputs

    @staticmethod
    def _check_batches(inp: RunInput, step: StepPlan, sizes: list[int]) -> None:
        """Each slice of a fan-out is one child workflow's input: it must fit in a payload."""
        size, limit = max(1, inp.for_each_batch_size), inp.limits.max_step_input_bytes
        for k in range(0, len(sizes), size):
            if sum(sizes[k : k + size]) > limit and workflow.patched(LIMITS_PATCH):
                raise StepFailed(
                    step.id,
                    f"step {step.id}: items {k} to {min(k + size, len(sizes)) - 1} together are"
                    f" more than {limit} bytes as JSON (the limit for one batch of"
                    f" {size}); make the items smaller",
                )

    async def _record_plans(
        self,
        step: StepPlan,
        plans: list[tuple[dict[str, Any], dict[str, Any] | ItemEnhancement]],
        outcomes: list[list[dict[str, Any]]] | None,
        items: int,
    ) -> None:
        """A fan-out step's STEP_ENHANCED records; with `outcomes` None (unknown), only the
        points decided against AI."""
        by_point = iter(outcomes or [])
        for i, (point, plan) in enumerate(plans):
            if isinstance(plan, ItemEnhancement):
                if outcomes is None:
                    continue
                record = tally(point["task"], next(by_point), True)
            else:
                record = {"task": point["task"], **plan, "items": items, "enhanced_items": 0}
            await self._record_point(step, str(i), record)

    async def _fan_out_children(
        self,
        inp: RunInput,
        step: StepPlan,
        inputs: list[Any],
        enhanced: list[ItemEnhancement],
        tally: OutputTally | None = None,
    ) -> tuple[list[Any], list[list[dict[str, Any]]]]:
        """Slices of `for_each_batch_size` items as child workflows, a few at a time:
        (outputs in item order, each enhanced point's outcomes in item order). With `tally`,
        each slice measures its own outputs (within the step's limit and a payload's), and
        here each slice's outputs are added as it finishes."""
        size = max(1, inp.for_each_batch_size)
        gate = asyncio.Semaphore(CHILD_CONCURRENCY)
        info = workflow.info()

        progress = workflow.patched("fan-out-progress")
        finished = [0]

        def batch(k: int) -> Callable[[], Awaitable[Any]]:
            async def run() -> Any:
                async with gate:
                    sliced = [
                        ItemEnhancement(e.task, e.apply, e.inputs[k : k + size]) for e in enhanced
                    ]
                    result = await workflow.execute_child_workflow(
                        BATCH_WORKFLOW_NAME,
                        BatchInput(
                            inp.execution_id,
                            inp.tenant_id,
                            step,
                            inputs[k : k + size],
                            k,
                            enhancements=sliced,
                            ai_task_queue=inp.ai_task_queue,
                            max_output_bytes=tally.limit if tally is not None else 0,
                        ),
                        id=f"{info.workflow_id}-{step.id}-{k // size}",
                        task_queue=info.task_queue,
                    )
                if tally is not None:
                    chunk = result["outputs"] if isinstance(result, dict) else result
                    for j, output in enumerate(chunk):
                        tally.add(output, k + j)
                if progress:  # long fan-outs show progress: one event per finished slice
                    finished[0] += len(inputs[k : k + size])
                    self._partial[step.id] = finished[0] / len(inputs)
                    await self._record(
                        f"step:{step.id}:items:{k // size}",
                        "STEP_PROGRESS",
                        step_id=step.id,
                        message=f"{finished[0]} of {len(inputs)} items",
                        payload={"items_done": finished[0], "items": len(inputs)},
                    )
                return result

            return run

        try:
            chunks = await _all_or_cancel([batch(k) for k in range(0, len(inputs), size)])
        except ChildWorkflowError as exc:
            if is_cancelled_exception(exc):
                raise
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(exc)
            raise StepFailed(step.id, message) from None
        outputs: list[Any] = []
        outcomes: list[list[dict[str, Any]]] = [[] for _ in enhanced]
        for chunk in chunks:
            if isinstance(chunk, dict):  # a slice with enhanced points
                outputs.extend(chunk["outputs"])
                for k, point_outcomes in enumerate(chunk["outcomes"]):
                    outcomes[k].extend(point_outcomes)
            else:
                outputs.extend(chunk)
        return outputs, outcomes

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
                    start_to_close_timeout=timedelta(seconds=plan.timeout_seconds),
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
        await workflow.execute_activity(
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
